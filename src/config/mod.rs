//! Flocker's configuration formats, read into a validated model.
//!
//! Two files describe what should run: the application file (Flocker's
//! `application.yml`, or its fig/compose form) and `deployment.yml` (which
//! node each application is pinned to, or `anywhere`). [`load`] and [`parse`]
//! read both and return a [`Configuration`] only when everything is valid;
//! otherwise they return every error found, each naming the file, line,
//! column and key path. Nothing here talks to a cluster: matching node keys
//! to members is [`resolve_nodes`], called where the membership is known.
//!
//! Code map: `yaml` builds a position-carrying tree from saphyr-parser's
//! events; `read` has the typed reads; `application` (Flocker form),
//! `compose` (fig and compose forms) and `deployment` walk the trees;
//! `apps` and `validate` check across applications and files; `model` holds
//! the result types; `names`, `image` and `size` the value rules; `write`
//! turns a model back into Flocker's two files ([`to_files`]), which read
//! back into the same model.

mod application;
mod apps;
mod check;
mod compose;
mod deployment;
mod duration;
mod error;
mod image;
mod model;
mod names;
mod read;
mod resolve;
mod size;
mod validate;
mod write;
mod yaml;

pub use check::{check_files, run_check};
pub use duration::{format_duration_ms, parse_duration_ms};
pub use error::{ConfigError, Position};
pub use model::{
    AppFormat, AppSpec, Configuration, Constraint, ConstraintOp, Deployment, ImageRef, Link,
    PortMapping, Protocol, RestartPolicy, VolumeSpec,
};
pub use names::{check_app_name, validate_label, MAX_LABEL_KEY, MAX_LABEL_VALUE, RESERVED_MOUNT};
pub use resolve::resolve_nodes;
pub use size::{format_size, parse_size};
pub use write::to_files;

use error::{KeyPath, Sink};
use std::io::Read;
use std::path::Path;

/// Largest configuration file read, the same as the API's frame limit: a
/// configuration that cannot be sent to the cluster is refused up front.
pub const MAX_CONFIG_BYTES: usize = crate::net::frame::MAX_CLIENT_FRAME;

/// Reads and checks both files.
pub fn load(
    deployment_path: &Path,
    application_path: &Path,
) -> Result<Configuration, Vec<ConfigError>> {
    load_with_format(deployment_path, application_path).map(|(c, _)| c)
}

/// Checks both files from text in memory; the names are what errors call
/// the files.
pub fn parse(
    deployment_text: &str,
    deployment_name: &str,
    application_text: &str,
    application_name: &str,
) -> Result<Configuration, Vec<ConfigError>> {
    let deployment = (Sink::new(deployment_name), Some(deployment_text));
    let application = (Sink::new(application_name), Some(application_text));
    build(deployment, application).map(|(c, _)| c)
}

pub(crate) fn load_with_format(
    deployment_path: &Path,
    application_path: &Path,
) -> Result<(Configuration, AppFormat), Vec<ConfigError>> {
    let mut deployment_sink = Sink::new(&deployment_path.display().to_string());
    let mut application_sink = Sink::new(&application_path.display().to_string());
    let deployment_text = read_text(deployment_path, &mut deployment_sink);
    let application_text = read_text(application_path, &mut application_sink);
    build(
        (deployment_sink, deployment_text.as_deref()),
        (application_sink, application_text.as_deref()),
    )
}

fn build(
    (mut deployment_sink, deployment_text): (Sink, Option<&str>),
    (mut application_sink, application_text): (Sink, Option<&str>),
) -> Result<(Configuration, AppFormat), Vec<ConfigError>> {
    let application_root = application_text.and_then(|t| document(t, &mut application_sink));
    let deployment_root = deployment_text.and_then(|t| document(t, &mut deployment_sink));

    let drafts = application_root.and_then(|root| apps::read(&mut application_sink, &root));
    let placements = deployment_root.and_then(|root| deployment::read(&mut deployment_sink, &root));
    let deployment =
        placements.map(|p| validate::cross_check(&mut deployment_sink, &p, drafts.as_ref()));
    let format = drafts.as_ref().map(|d| d.format);
    let applications = drafts.map(|d| apps::finish(&mut application_sink, d));

    let mut errors = Vec::new();
    for mut sink in [deployment_sink, application_sink] {
        sink.errors
            .sort_by(|a, b| (a.at, &a.path).cmp(&(b.at, &b.path)));
        errors.append(&mut sink.errors);
    }
    match (applications, deployment, format) {
        (Some(applications), Some(deployment), Some(format)) if errors.is_empty() => Ok((
            Configuration {
                applications,
                deployment,
            },
            format,
        )),
        _ => {
            // Each failure path records its reason; this only guards against
            // reporting "invalid" with nothing to show for it.
            if errors.is_empty() {
                errors.push(ConfigError {
                    file: String::new(),
                    at: None,
                    path: String::new(),
                    message: "the configuration could not be read".into(),
                });
            }
            Err(errors)
        }
    }
}

fn document(text: &str, sink: &mut Sink) -> Option<yaml::Node> {
    if text.len() > MAX_CONFIG_BYTES {
        sink.whole(format!(
            "the file is larger than {} MiB",
            MAX_CONFIG_BYTES >> 20
        ));
        return None;
    }
    yaml::parse(text, sink)
}

/// Reads a file as UTF-8 text, bounded so a huge or endless file (a device,
/// a pipe) is refused without reading it all.
fn read_text(path: &Path, sink: &mut Sink) -> Option<String> {
    let mut bytes = Vec::new();
    let read = std::fs::File::open(path)
        .and_then(|f| f.take(MAX_CONFIG_BYTES as u64 + 1).read_to_end(&mut bytes));
    if let Err(e) = read {
        sink.whole(format!("cannot read: {e}"));
        return None;
    }
    if bytes.len() > MAX_CONFIG_BYTES {
        sink.whole(format!(
            "the file is larger than {} MiB",
            MAX_CONFIG_BYTES >> 20
        ));
        return None;
    }
    match String::from_utf8(bytes) {
        Ok(text) => Some(text),
        Err(e) => {
            let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
            let good = std::str::from_utf8(good).unwrap_or_default();
            let line = good.matches('\n').count() + 1;
            let column = good.rsplit('\n').next().unwrap_or("").chars().count() + 1;
            let at = Position {
                line: u32::try_from(line).unwrap_or(u32::MAX),
                column: u32::try_from(column).unwrap_or(u32::MAX),
            };
            sink.at(at, &KeyPath::root(), "the file is not UTF-8 text");
            None
        }
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_roundtrip;
