//! The application file, whatever its form: tells the Flocker form from the
//! fig and compose forms, holds what the form walkers produce (draft
//! applications that still remember where each value was written), and
//! finishes them into [`AppSpec`]s: links resolved to the application they
//! lead to, ports and links checked against each other (an external port
//! belongs to one application in the whole cluster), lists put in canonical
//! order.
//!
//! The per-key reading lives in `application.rs` (Flocker form) and
//! `compose.rs` (fig and compose forms); the readers both forms share are
//! here.

use super::error::{did_you_mean, KeyPath, Position, Sink};
use super::model::{AppFormat, AppSpec, ImageRef, Link, Protocol};
use super::read;
use super::yaml::{Node, Value};
use super::{application, compose};
use std::collections::{BTreeMap, BTreeSet};

/// Where a value was written, for errors found after the walk.
#[derive(Debug, Clone)]
pub(crate) struct Mark {
    pub at: Position,
    pub path: KeyPath,
}

#[derive(Debug)]
pub(crate) struct DraftApp {
    /// Complete except for `links`; lists not yet in canonical order.
    pub spec: AppSpec,
    /// The `external` value of each of `spec.ports`, in the same order.
    pub port_marks: Vec<Mark>,
    pub links: Vec<DraftLink>,
    pub dataset_mark: Option<Mark>,
}

#[derive(Debug)]
pub(crate) enum DraftLink {
    /// Flocker form: leads to the application publishing `remote_port` as
    /// TCP; `app`, when the link names it, must be that application.
    ToPort {
        alias: String,
        local_port: u16,
        remote_port: u16,
        app: Option<(String, Mark)>,
        mark: Mark,
    },
    /// fig/compose form: leads to a named service, one link per TCP port it
    /// publishes.
    ToApp {
        target: String,
        alias: String,
        mark: Mark,
    },
}

#[derive(Debug)]
pub(crate) struct DraftApps {
    pub format: AppFormat,
    pub apps: BTreeMap<String, DraftApp>,
}

impl DraftApp {
    pub fn new() -> DraftApp {
        DraftApp {
            spec: AppSpec::new(ImageRef {
                name: String::new(),
                tag: None,
                digest: None,
            }),
            port_marks: Vec::new(),
            links: Vec::new(),
            dataset_mark: None,
        }
    }
}

/// Reads the application file's document in whichever form it is written.
/// `None` when not even the form could be told.
pub(crate) fn read(sink: &mut Sink, root: &Node) -> Option<DraftApps> {
    let root_path = KeyPath::root();
    let entries = read::map(
        sink,
        root,
        &root_path,
        "a map: 'version' and 'applications', 'services', or service names",
    )?;
    let has = |k: &str| read::get(entries, k).is_some();
    if has("nodes") && !has("applications") && !has("services") {
        let message = "this is a deployment file, not an application file (the order is DEPLOYMENT APPLICATION)";
        sink.at(root.at, &root_path, message);
        return None;
    }
    let (format, apps) = if has("applications")
        || (has("version") && !has("services") && is_flocker_version(entries))
    {
        (
            AppFormat::Flocker,
            application::read(sink, entries, root.at),
        )
    } else if has("services") || has("version") {
        (
            AppFormat::Compose,
            compose::read_compose(sink, entries, root.at),
        )
    } else {
        (AppFormat::Fig, compose::read_fig(sink, entries))
    };
    Some(DraftApps { format, apps })
}

/// A top-level `version: 1` marks the Flocker form even when its
/// `applications` key is missing; compose versions are 2 and up.
fn is_flocker_version(entries: &[super::yaml::Entry]) -> bool {
    read::get(entries, "version")
        .and_then(|e| e.value.scalar())
        .is_some_and(|s| s.text.trim() == "1")
}

/// Reads each application under `apps` (already checked to be a map).
pub(crate) fn read_each(
    sink: &mut Sink,
    entries: &[super::yaml::Entry],
    path: &KeyPath,
    mut one: impl FnMut(&mut Sink, &Node, &KeyPath) -> DraftApp,
) -> BTreeMap<String, DraftApp> {
    let mut apps = BTreeMap::new();
    if let Some(over) = entries.get(super::names::MAX_APPS) {
        let message = format!(
            "{} applications, more than the limit of {}",
            entries.len(),
            super::names::MAX_APPS
        );
        sink.at(over.key_at, &path.key(&over.key), message);
    }
    for entry in entries {
        let app_path = path.key(&entry.key);
        if let Err(why) = super::names::check_app_name(&entry.key) {
            sink.at(entry.key_at, &app_path, why);
        }
        let draft = one(sink, &entry.value, &app_path);
        apps.insert(entry.key.clone(), draft);
    }
    apps
}

pub(crate) fn read_image(sink: &mut Sink, node: &Node, path: &KeyPath) -> Option<ImageRef> {
    let text = read::text(sink, node, path, "an image name such as nginx:1.25")?;
    read::check(sink, node, path, ImageRef::parse(&text))
}

/// `replicas` and `max_lag` among a map's `entries` (a Flocker-form volume
/// or a compose service's `x-flocker`), each defaulted when absent; `None`
/// when either is invalid (the error is in `sink`).
pub(crate) fn read_replication(
    sink: &mut Sink,
    entries: &[super::yaml::Entry],
    path: &KeyPath,
) -> Option<(u32, u64)> {
    use super::model::VolumeSpec;
    let replicas = match read::get(entries, "replicas") {
        Some(e) => read::uint(
            sink,
            &e.value,
            &path.key("replicas"),
            1,
            u64::from(VolumeSpec::MAX_REPLICAS),
            &format!(
                "a number of copies 1-{} (the owner's included)",
                VolumeSpec::MAX_REPLICAS
            ),
        )
        .map(|n| n as u32),
        None => Some(1),
    };
    let max_lag = match read::get(entries, "max_lag") {
        Some(e) => {
            let p = path.key("max_lag");
            let parsed = match e.value.scalar() {
                Some(s) if !s.is_null() => super::parse_duration_ms(&s.text).and_then(|ms| {
                    if (VolumeSpec::MIN_MAX_LAG_MS..=VolumeSpec::MAX_MAX_LAG_MS).contains(&ms) {
                        Ok(ms)
                    } else {
                        Err(format!(
                            "expected a duration between 1s and 1h, got {}",
                            e.value.describe()
                        ))
                    }
                }),
                _ => Err("expected a duration like 10s".to_string()),
            };
            read::check(sink, &e.value, &p, parsed)
        }
        None => Some(VolumeSpec::DEFAULT_MAX_LAG_MS),
    };
    Some((replicas?, max_lag?))
}

pub(crate) fn read_cpu_shares(sink: &mut Sink, node: &Node, path: &KeyPath) -> Option<u64> {
    read::uint(sink, node, path, 2, 262_144, "CPU shares 2-262144")
}

/// An environment variable value: strings, and numbers as written. Booleans
/// and nulls are refused rather than guessed at.
pub(crate) fn read_env_value(sink: &mut Sink, node: &Node, path: &KeyPath) -> Option<String> {
    match node.scalar() {
        Some(s) if s.is_bool() => {
            let message = format!(
                "expected a string, got {} (quote it: \"{}\")",
                s.text, s.text
            );
            sink.at(node.at, path, message);
            None
        }
        Some(s) if s.is_null() => {
            sink.at(
                node.at,
                path,
                "expected a string, got nothing (write \"\" for an empty value)",
            );
            None
        }
        Some(s) => read::check(
            sink,
            node,
            path,
            super::names::check_env_value(&s.text).map(|()| s.text.clone()),
        ),
        None => {
            sink.at(
                node.at,
                path,
                format!("expected a string, got {}", node.describe()),
            );
            None
        }
    }
}

/// Refuses an environment of more than `MAX_ENV_VARS` variables, at the
/// first one over the limit.
pub(crate) fn check_env_count(sink: &mut Sink, count: usize, first_over: Option<Mark>) {
    if let Some(mark) = first_over {
        let message = format!(
            "{count} environment variables, more than the limit of {}",
            super::names::MAX_ENV_VARS
        );
        sink.at(mark.at, &mark.path, message);
    }
}

/// A list of strings, each with where it was written.
pub(crate) fn read_strings(
    sink: &mut Sink,
    node: &Node,
    path: &KeyPath,
    what: &str,
) -> Vec<(String, Mark)> {
    let Some(items) = read::seq(sink, node, path, &format!("a list of {what}")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let item_path = path.index(i);
        let text = match &item.value {
            Value::Scalar(s) if !s.is_null() => Some(s.text.clone()),
            _ => {
                let message = format!("expected {what}, got {}", item.describe());
                sink.at(item.at, &item_path, message);
                None
            }
        };
        if let Some(text) = text {
            out.push((
                text,
                Mark {
                    at: item.at,
                    path: item_path,
                },
            ));
        }
    }
    out
}

/// The container command: a non-empty list of strings without NUL.
pub(crate) fn check_command(
    sink: &mut Sink,
    node: &Node,
    path: &KeyPath,
    words: Vec<String>,
) -> Option<Vec<String>> {
    if words.is_empty() {
        sink.at(
            node.at,
            path,
            "the command is empty; leave 'command' out to run the image's own",
        );
        return None;
    }
    if words.iter().any(|w| w.contains('\0')) {
        sink.at(node.at, path, "the command may not contain NUL");
        return None;
    }
    if let Err(why) = super::names::check_command_words(&words) {
        sink.at(node.at, path, why);
        return None;
    }
    Some(words)
}

/// `label=value` / `label!=value` strings; duplicates and constraints that
/// no node could meet are refused.
pub(crate) fn read_constraints(
    sink: &mut Sink,
    node: &Node,
    path: &KeyPath,
) -> Vec<super::model::Constraint> {
    use super::model::ConstraintOp::{Equal, NotEqual};
    let mut out: Vec<super::model::Constraint> = Vec::new();
    let items = read_strings(
        sink,
        node,
        path,
        "constraints (label=value or label!=value)",
    );
    if let Some((_, mark)) = items.get(super::names::MAX_CONSTRAINTS) {
        let message = format!(
            "{} constraints, more than the limit of {}",
            items.len(),
            super::names::MAX_CONSTRAINTS
        );
        sink.at(mark.at, &mark.path, message);
        return out;
    }
    for (text, mark) in items {
        let constraint = match super::names::parse_constraint(&text) {
            Ok(c) => c,
            Err(why) => {
                sink.at(mark.at, &mark.path, why);
                continue;
            }
        };
        if out.contains(&constraint) {
            sink.at(
                mark.at,
                &mark.path,
                format!("constraint '{constraint}' is given twice"),
            );
            continue;
        }
        let clash = out.iter().find(|c| {
            c.label == constraint.label
                && match (c.op, constraint.op) {
                    (Equal, Equal) => c.value != constraint.value,
                    (Equal, NotEqual) | (NotEqual, Equal) => c.value == constraint.value,
                    (NotEqual, NotEqual) => false,
                }
        });
        if let Some(c) = clash {
            let message =
                format!("constraint '{constraint}' contradicts '{c}': no node could meet both");
            sink.at(mark.at, &mark.path, message);
            continue;
        }
        out.push(constraint);
    }
    out
}

/// Finishes the drafts: resolves links, checks what needs every
/// application at once, and puts lists in canonical order.
pub(crate) fn finish(sink: &mut Sink, drafts: DraftApps) -> BTreeMap<String, AppSpec> {
    check_ports(sink, &drafts);
    // External TCP port → the applications publishing it; more than one
    // only when `check_ports` has refused the file already.
    let mut tcp_publishers: BTreeMap<u16, BTreeSet<&str>> = BTreeMap::new();
    let mut udp_publishers: BTreeMap<u16, BTreeSet<&str>> = BTreeMap::new();
    for (name, draft) in &drafts.apps {
        for port in &draft.spec.ports {
            let publishers = match port.protocol {
                Protocol::Tcp => &mut tcp_publishers,
                Protocol::Udp => &mut udp_publishers,
            };
            publishers.entry(port.external).or_default().insert(name);
        }
    }
    let mut datasets: BTreeMap<&str, &str> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (name, draft) in &drafts.apps {
        let mut spec = draft.spec.clone();

        if let (Some(volume), Some(mark)) = (&draft.spec.volume, &draft.dataset_mark) {
            if let Some(id) = &volume.dataset_id {
                if let Some(other) = datasets.insert(id, name) {
                    let message = format!(
                        "dataset_id {id} is also the volume of '{other}'; a volume has one owner"
                    );
                    sink.at(mark.at, &mark.path, message);
                }
            }
        }

        let mut links: Vec<(Link, &Mark)> = Vec::new();
        for link in &draft.links {
            match link {
                DraftLink::ToPort {
                    alias,
                    local_port,
                    remote_port,
                    app,
                    mark,
                } => {
                    let target = match app {
                        Some((target, app_mark)) => {
                            link_to_named(sink, &drafts, target, app_mark, *remote_port, mark)
                        }
                        None => {
                            link_to_port(sink, &tcp_publishers, &udp_publishers, *remote_port, mark)
                        }
                    };
                    if let Some(target) = target {
                        let link = Link {
                            alias: alias.clone(),
                            local_port: *local_port,
                            remote_port: *remote_port,
                            app: target.to_string(),
                        };
                        links.push((link, mark));
                    }
                }
                DraftLink::ToApp {
                    target,
                    alias,
                    mark,
                } => match drafts.apps.get(target) {
                    None => {
                        let hint = did_you_mean(target, drafts.apps.keys().map(String::as_str));
                        sink.at(
                            mark.at,
                            &mark.path,
                            format!("link to unknown service '{target}'{hint}"),
                        );
                    }
                    Some(t) if t.spec.ports.is_empty() => {
                        let message = format!(
                            "'{target}' publishes no ports, so a link to it gives nothing (a link reaches the linked service's published ports)"
                        );
                        sink.at(mark.at, &mark.path, message);
                    }
                    Some(t) if t.spec.ports.iter().all(|p| p.protocol != Protocol::Tcp) => {
                        let message = format!(
                            "'{target}' publishes only UDP ports, so a link to it gives nothing (a link reaches the linked service's TCP ports)"
                        );
                        sink.at(mark.at, &mark.path, message);
                    }
                    Some(t) => {
                        for port in t.spec.ports.iter().filter(|p| p.protocol == Protocol::Tcp) {
                            let link = Link {
                                alias: alias.clone(),
                                local_port: port.internal,
                                remote_port: port.external,
                                app: target.clone(),
                            };
                            links.push((link, mark));
                        }
                    }
                },
            }
        }
        let mut seen_links = BTreeSet::new();
        for (link, mark) in &links {
            if !seen_links.insert((link.alias.as_str(), link.local_port)) {
                let message = format!(
                    "link alias '{}' with local port {} is given twice",
                    link.alias, link.local_port
                );
                sink.at(mark.at, &mark.path, message);
            }
        }
        spec.links = links.into_iter().map(|(l, _)| l).collect();
        spec.links.sort();
        spec.links.dedup();
        spec.ports
            .sort_by_key(|p| (p.external, p.protocol, p.internal));
        spec.constraints.sort();
        out.insert(name.clone(), spec);
    }
    out
}

/// An external port is one application's in the whole cluster, per
/// protocol: every node answers on it and forwards to wherever that
/// application runs. A port given again is reported where it is written
/// again (in file order), naming the application that has it first.
fn check_ports(sink: &mut Sink, drafts: &DraftApps) {
    let mut claims: BTreeMap<(u16, Protocol), Vec<(&Mark, &str)>> = BTreeMap::new();
    for (name, draft) in &drafts.apps {
        for (port, mark) in draft.spec.ports.iter().zip(&draft.port_marks) {
            claims
                .entry((port.external, port.protocol))
                .or_default()
                .push((mark, name));
        }
    }
    for ((port, protocol), mut claimants) in claims {
        claimants.sort_by_key(|(mark, _)| mark.at);
        let Some(&(_, first)) = claimants.first() else {
            continue;
        };
        let port_name = protocol.port_name(port);
        let mut reported = BTreeSet::new();
        for &(mark, app) in &claimants[1..] {
            // An application other than the first is told of the clash
            // once; any further repeat is its own.
            let message = if app != first && reported.insert(app) {
                format!(
                    "external port {port_name} is also published by '{first}'; external ports are cluster-wide: every node answers on them"
                )
            } else {
                format!("external port {port_name} is published twice by '{app}'")
            };
            sink.at(mark.at, &mark.path, message);
        }
    }
}

/// The application a Flocker-form link names with `app`, which must
/// publish `remote_port` as TCP.
fn link_to_named<'a>(
    sink: &mut Sink,
    drafts: &'a DraftApps,
    target: &'a str,
    app_mark: &Mark,
    remote_port: u16,
    mark: &Mark,
) -> Option<&'a str> {
    let Some(t) = drafts.apps.get(target) else {
        let hint = did_you_mean(target, drafts.apps.keys().map(String::as_str));
        sink.at(
            app_mark.at,
            &app_mark.path,
            format!("link to unknown application '{target}'{hint}"),
        );
        return None;
    };
    let published = |protocol| {
        t.spec
            .ports
            .iter()
            .any(|p| p.external == remote_port && p.protocol == protocol)
    };
    if published(Protocol::Tcp) {
        return Some(target);
    }
    let message = if published(Protocol::Udp) {
        format!("'{target}' publishes external port {remote_port} only as UDP; {LINKS_ARE_TCP}")
    } else {
        format!(
            "'{target}' does not publish external port {remote_port} (a link's remote_port is the external port of the application it leads to)"
        )
    };
    sink.at(mark.at, &mark.path, message);
    None
}

/// The application publishing a Flocker-form link's `remote_port` as TCP.
fn link_to_port<'a>(
    sink: &mut Sink,
    tcp_publishers: &BTreeMap<u16, BTreeSet<&'a str>>,
    udp_publishers: &BTreeMap<u16, BTreeSet<&'a str>>,
    remote_port: u16,
    mark: &Mark,
) -> Option<&'a str> {
    if let Some(apps) = tcp_publishers.get(&remote_port) {
        // Several only when the port clash is reported already.
        return apps.first().copied().filter(|_| apps.len() == 1);
    }
    let message = match udp_publishers.get(&remote_port) {
        Some(apps) => {
            let apps: Vec<&str> = apps.iter().copied().collect();
            format!(
                "external port {remote_port} is published only as UDP (by {}); {LINKS_ARE_TCP}",
                quoted_list(&apps)
            )
        }
        None => format!(
            "no application publishes external port {remote_port} (a link's remote_port is the external port of the application it leads to)"
        ),
    };
    sink.at(mark.at, &mark.path, message);
    None
}

const LINKS_ARE_TCP: &str =
    "a link's remote_port is a TCP port (links give Docker's ALIAS_PORT_N_TCP variables)";

pub(crate) fn quoted_list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("'{n}'")).collect();
    match quoted.as_slice() {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}
