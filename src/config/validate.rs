//! Checks across the two files: every application named in deployment.yml
//! is defined in the application file and named only once, and no two
//! applications pinned under one node key want the same external port.
//! Errors are placed in deployment.yml, where the placement is made; a port
//! clash also names where the port was written in the application file.
//!
//! Anywhere applications are not checked for port clashes here: the
//! scheduler places them where their ports are free.

use super::apps::{DraftApps, Mark};
use super::deployment::Placement;
use super::error::{did_you_mean, Sink};
use super::model::Deployment;
use std::collections::BTreeMap;

/// Checks the placements against the applications (when the application
/// file could be read at all) and builds the deployment.
pub(crate) fn cross_check(
    sink: &mut Sink,
    placements: &[Placement],
    apps: Option<&DraftApps>,
    application_file: &str,
) -> Deployment {
    let mut first: BTreeMap<&str, &Mark> = BTreeMap::new();
    // (node key, external port) → the application that wants it.
    let mut ports: BTreeMap<(&str, u16), &str> = BTreeMap::new();
    let mut deployment = Deployment::default();
    for placement in placements {
        let app = placement.app.as_str();
        let mark = &placement.mark;
        if let Some(apps) = apps {
            if !apps.apps.contains_key(app) {
                let hint = did_you_mean(app, apps.apps.keys().map(String::as_str));
                sink.at(
                    mark.at,
                    &mark.path,
                    format!("unknown application '{app}'{hint}"),
                );
                continue;
            }
        }
        if let Some(earlier) = first.get(app) {
            let message = format!(
                "'{app}' is placed twice: first at line {} ({}); an application runs in one place",
                earlier.at.line, earlier.path
            );
            sink.at(mark.at, &mark.path, message);
            continue;
        }
        first.insert(app, mark);
        match &placement.node {
            None => deployment.anywhere.push(app.to_string()),
            Some(key) => {
                if let Some(draft) = apps.and_then(|a| a.apps.get(app)) {
                    for (port, port_mark) in draft.spec.ports.iter().zip(&draft.port_marks) {
                        match ports.get(&(key.as_str(), port.external)) {
                            Some(other) if *other != app => {
                                let message = format!(
                                    "'{app}' wants external port {} ({application_file}:{}:{}), which '{other}' already has on node '{key}'",
                                    port.external, port_mark.at.line, port_mark.at.column
                                );
                                sink.at(mark.at, &mark.path, message);
                            }
                            _ => {
                                ports.insert((key.as_str(), port.external), app);
                            }
                        }
                    }
                }
                deployment
                    .pinned
                    .entry(key.clone())
                    .or_default()
                    .push(app.to_string());
            }
        }
    }
    for apps in deployment.pinned.values_mut() {
        apps.sort();
    }
    deployment.anywhere.sort();
    deployment
}
