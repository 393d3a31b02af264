//! Flocker's own application.yml: `version: 1` and `applications:`, each
//! application a map of every key Flocker accepted (`image`, `ports`,
//! `links`, `environment`, `volume`, `mem_limit`, `cpu_shares`,
//! `restart_policy`) plus ours (`command`, `constraints`).
//!
//! Our additions, in this form only:
//! - `command`: a list of strings, replacing the image's command.
//! - `constraints`: a list of `label=value` / `label!=value` strings on node
//!   labels (the ones `flocker ctl label` sets), all of which must hold for
//!   the scheduler to place the application on a node. A list of strings
//!   rather than a map, so a constraint can also exclude (`zone!=eu-1`).
//! - `protocol` in a port: `tcp` (the default) or `udp`.
//! - `app` in a link: the application the link leads to. Flocker's links
//!   name only `remote_port` and lead to whichever application publishes
//!   it; an external port now belongs to one application in the whole
//!   cluster (every node answers on it), so `app` says nothing the port
//!   does not. It is still read, from files written when two applications
//!   could share a port, and checked to publish `remote_port`; the writer
//!   (`write.rs`) leaves it out.
//!
//! - `preserve_setuid` in a volume: `true` lets a node receiving the volume
//!   write setuid and setgid bits on its files (by default they are
//!   recorded but not written; see `volume::apply`).
//!
//! `mem_limit` and `volume.maximum_size` take bytes or a size with a binary
//! unit (see `size.rs`). `volume.dataset_id`, which Flocker wrote when it
//! exported a configuration, is read and kept.

use super::apps::{self, DraftApp, DraftLink, Mark};
use super::error::{KeyPath, Position, Sink};
use super::model::{PortMapping, Protocol, RestartPolicy, VolumeSpec};
use super::names;
use super::read;
use super::yaml::{Entry, Node};
use std::collections::BTreeMap;

const TOP_KEYS: &[&str] = &["version", "applications"];
const APP_KEYS: &[&str] = &[
    "image",
    "ports",
    "links",
    "environment",
    "volume",
    "mem_limit",
    "cpu_shares",
    "restart_policy",
    "command",
    "constraints",
];

pub(crate) fn read(
    sink: &mut Sink,
    entries: &[Entry],
    root_at: Position,
) -> BTreeMap<String, DraftApp> {
    let root = KeyPath::root();
    read::check_keys(sink, entries, &root, TOP_KEYS, &[]);
    read_version(sink, entries, root_at);
    let Some(apps) = read::require(sink, entries, root_at, &root, "applications") else {
        return BTreeMap::new();
    };
    let path = root.key("applications");
    let Some(app_entries) = read::map(
        sink,
        &apps.value,
        &path,
        "a map of application names to their settings",
    ) else {
        return BTreeMap::new();
    };
    apps::read_each(sink, app_entries, &path, read_app)
}

/// Both Flocker files must say `version: 1`.
pub(crate) fn read_version(sink: &mut Sink, entries: &[Entry], root_at: Position) {
    let root = KeyPath::root();
    match read::get(entries, "version") {
        None => sink.at(
            root_at,
            &root,
            "missing 'version' (Flocker's files start with version: 1)",
        ),
        Some(v) => {
            read::uint(sink, &v.value, &root.key("version"), 1, 1, "version 1");
        }
    }
}

fn read_app(sink: &mut Sink, node: &Node, path: &KeyPath) -> DraftApp {
    let mut draft = DraftApp::new();
    let Some(entries) = read::map(sink, node, path, "a map of application settings") else {
        return draft;
    };
    read::check_keys(sink, entries, path, APP_KEYS, &[]);
    if let Some(image) = read::require(sink, entries, node.at, path, "image") {
        if let Some(image) = apps::read_image(sink, &image.value, &path.key("image")) {
            draft.spec.image = image;
        }
    }
    for entry in entries {
        let p = path.key(&entry.key);
        let v = &entry.value;
        match entry.key.as_str() {
            "ports" => read_ports(sink, v, &p, &mut draft),
            "links" => read_links(sink, v, &p, &mut draft),
            "environment" => {
                if let Some(env) =
                    read::map(sink, v, &p, "a map of environment variable names to values")
                {
                    let over = env.get(names::MAX_ENV_VARS).map(|e| Mark {
                        at: e.key_at,
                        path: p.key(&e.key),
                    });
                    apps::check_env_count(sink, env.len(), over);
                    for e in env {
                        let var_path = p.key(&e.key);
                        if let Err(why) = names::check_env_name(&e.key) {
                            sink.at(e.key_at, &var_path, why);
                        }
                        if let Some(value) = apps::read_env_value(sink, &e.value, &var_path) {
                            draft.spec.environment.insert(e.key.clone(), value);
                        }
                    }
                }
            }
            "volume" => read_volume(sink, v, &p, &mut draft),
            "mem_limit" => draft.spec.mem_limit = read::size(sink, v, &p),
            "cpu_shares" => draft.spec.cpu_shares = apps::read_cpu_shares(sink, v, &p),
            "restart_policy" => {
                if let Some(policy) = read_restart_policy(sink, v, &p) {
                    draft.spec.restart_policy = policy;
                }
            }
            "command" => {
                let words: Vec<String> = apps::read_strings(sink, v, &p, "strings")
                    .into_iter()
                    .map(|(w, _)| w)
                    .collect();
                // Only a list whose every item was a string is checked as a
                // whole; the bad items have been reported already.
                if matches!(&v.value, super::yaml::Value::Seq(items) if items.len() == words.len())
                {
                    draft.spec.command = apps::check_command(sink, v, &p, words);
                }
            }
            "constraints" => draft.spec.constraints = apps::read_constraints(sink, v, &p),
            _ => {}
        }
    }
    draft
}

fn read_ports(sink: &mut Sink, node: &Node, path: &KeyPath, draft: &mut DraftApp) {
    let Some(items) = read::seq(sink, node, path, "a list of {internal, external} ports") else {
        return;
    };
    for (i, item) in items.iter().enumerate() {
        let p = path.index(i);
        let Some(entries) = read::map(sink, item, &p, "a map with 'internal' and 'external'")
        else {
            continue;
        };
        read::check_keys(
            sink,
            entries,
            &p,
            &["internal", "external", "protocol"],
            &[],
        );
        let internal = read::require(sink, entries, item.at, &p, "internal")
            .and_then(|e| read::port(sink, &e.value, &p.key("internal")));
        let external = read::require(sink, entries, item.at, &p, "external")
            .and_then(|e| read::port(sink, &e.value, &p.key("external")).map(|port| (port, e)));
        let protocol = match read::get(entries, "protocol") {
            None => Some(Protocol::Tcp),
            Some(e) => read_protocol(sink, &e.value, &p.key("protocol")),
        };
        if let (Some(internal), Some((external, e)), Some(protocol)) =
            (internal, external, protocol)
        {
            draft.spec.ports.push(PortMapping {
                internal,
                external,
                protocol,
            });
            draft.port_marks.push(Mark {
                at: e.value.at,
                path: p.key("external"),
            });
        }
    }
}

fn read_protocol(sink: &mut Sink, node: &Node, path: &KeyPath) -> Option<Protocol> {
    let text = read::text(sink, node, path, "tcp or udp")?;
    let protocol = match text.as_str() {
        "tcp" => Ok(Protocol::Tcp),
        "udp" => Ok(Protocol::Udp),
        _ => Err(format!("expected tcp or udp, got {}", node.describe())),
    };
    read::check(sink, node, path, protocol)
}

fn read_links(sink: &mut Sink, node: &Node, path: &KeyPath, draft: &mut DraftApp) {
    let Some(items) = read::seq(
        sink,
        node,
        path,
        "a list of {local_port, remote_port, alias} links",
    ) else {
        return;
    };
    for (i, item) in items.iter().enumerate() {
        let p = path.index(i);
        let Some(entries) = read::map(
            sink,
            item,
            &p,
            "a map with 'local_port', 'remote_port' and 'alias'",
        ) else {
            continue;
        };
        read::check_keys(
            sink,
            entries,
            &p,
            &["local_port", "remote_port", "alias", "app"],
            &[],
        );
        let local = read::require(sink, entries, item.at, &p, "local_port")
            .and_then(|e| read::port(sink, &e.value, &p.key("local_port")));
        let remote = read::require(sink, entries, item.at, &p, "remote_port")
            .and_then(|e| read::port(sink, &e.value, &p.key("remote_port")).map(|port| (port, e)));
        let alias = read::require(sink, entries, item.at, &p, "alias").and_then(|e| {
            let ap = p.key("alias");
            let text = read::text(sink, &e.value, &ap, "an alias")?;
            read::check(
                sink,
                &e.value,
                &ap,
                names::check_alias(&text).map(|()| text),
            )
        });
        let app = match read::get(entries, "app") {
            None => Some(None),
            Some(e) => {
                let ap = p.key("app");
                read::text(sink, &e.value, &ap, "an application name").map(|name| {
                    Some((
                        name,
                        Mark {
                            at: e.value.at,
                            path: ap,
                        },
                    ))
                })
            }
        };
        if let (Some(local_port), Some((remote_port, e)), Some(alias), Some(app)) =
            (local, remote, alias, app)
        {
            draft.links.push(DraftLink::ToPort {
                alias,
                local_port,
                remote_port,
                app,
                mark: Mark {
                    at: e.value.at,
                    path: p.key("remote_port"),
                },
            });
        }
    }
}

fn read_volume(sink: &mut Sink, node: &Node, path: &KeyPath, draft: &mut DraftApp) {
    let Some(entries) = read::map(
        sink,
        node,
        path,
        "a map with 'mountpoint' and optionally 'maximum_size', 'preserve_setuid', 'replicas' and 'max_lag'",
    ) else {
        return;
    };
    read::check_keys(
        sink,
        entries,
        path,
        &[
            "mountpoint",
            "maximum_size",
            "dataset_id",
            "preserve_setuid",
            "replicas",
            "max_lag",
        ],
        &[],
    );
    let mountpoint = read::require(sink, entries, node.at, path, "mountpoint").and_then(|e| {
        let p = path.key("mountpoint");
        let text = read::text(sink, &e.value, &p, "an absolute path")?;
        read::check(
            sink,
            &e.value,
            &p,
            names::check_mountpoint(&text).map(|()| text),
        )
    });
    let maximum_size = match read::get(entries, "maximum_size") {
        Some(e) => read::size(sink, &e.value, &path.key("maximum_size")).map(Some),
        None => Some(None),
    };
    let dataset_id = match read::get(entries, "dataset_id") {
        Some(e) => {
            let p = path.key("dataset_id");
            draft.dataset_mark = Some(Mark {
                at: e.value.at,
                path: p.clone(),
            });
            read::text(sink, &e.value, &p, "a UUID")
                .and_then(|id| {
                    read::check(
                        sink,
                        &e.value,
                        &p,
                        names::check_dataset_id(&id).map(|()| id),
                    )
                })
                .map(Some)
        }
        None => Some(None),
    };
    let preserve_setuid = match read::get(entries, "preserve_setuid") {
        Some(e) => read::boolean(sink, &e.value, &path.key("preserve_setuid")),
        None => Some(false),
    };
    let replication = apps::read_replication(sink, entries, path);
    if let (
        Some(mountpoint),
        Some(maximum_size),
        Some(dataset_id),
        Some(preserve_setuid),
        Some((replicas, max_lag_ms)),
    ) = (
        mountpoint,
        maximum_size,
        dataset_id,
        preserve_setuid,
        replication,
    ) {
        draft.spec.volume = Some(VolumeSpec {
            mountpoint,
            maximum_size,
            dataset_id,
            preserve_setuid,
            replicas,
            max_lag_ms,
        });
    }
}

fn read_restart_policy(sink: &mut Sink, node: &Node, path: &KeyPath) -> Option<RestartPolicy> {
    let entries = read::map(
        sink,
        node,
        path,
        "a map with 'name' (never, always or on-failure)",
    )?;
    read::check_keys(sink, entries, path, &["name", "maximum_retry_count"], &[]);
    let name_entry = read::require(sink, entries, node.at, path, "name")?;
    let name_path = path.key("name");
    let name = read::text(
        sink,
        &name_entry.value,
        &name_path,
        "never, always or on-failure",
    )?;
    let retries = read::get(entries, "maximum_retry_count");
    match (name.as_str(), retries) {
        ("never", None) => Some(RestartPolicy::Never),
        ("always", None) => Some(RestartPolicy::Always),
        ("on-failure", None) => Some(RestartPolicy::OnFailure {
            maximum_retry_count: None,
        }),
        ("on-failure", Some(e)) => {
            let p = path.key("maximum_retry_count");
            let count = read::uint(
                sink,
                &e.value,
                &p,
                1,
                u64::from(u32::MAX),
                "a retry count of at least 1",
            )?;
            Some(RestartPolicy::OnFailure {
                maximum_retry_count: Some(count as u32),
            })
        }
        ("never" | "always", Some(e)) => {
            let message =
                format!("maximum_retry_count is only allowed with name: on-failure, not {name}");
            sink.at(e.key_at, &path.key("maximum_retry_count"), message);
            None
        }
        _ => {
            let message = format!(
                "expected never, always or on-failure, got {}",
                name_entry.value.describe()
            );
            sink.at(name_entry.value.at, &name_path, message);
            None
        }
    }
}
