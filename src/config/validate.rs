//! Checks across the two files: every application named in deployment.yml
//! is defined in the application file and named only once. Errors are
//! placed in deployment.yml, where the placement is made.
//!
//! Ports need no check here: an external port belongs to one application in
//! the whole cluster wherever it runs, which the application file alone
//! shows (`apps::finish`).

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
) -> Deployment {
    let mut first: BTreeMap<&str, &Mark> = BTreeMap::new();
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
