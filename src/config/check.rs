//! `flocker config check DEPLOYMENT APPLICATION`: validates both files
//! offline. Exit 0 with a one-line summary on stdout, or exit 1 with every
//! error on stderr, one per line as `file:line:col: key.path: message`.
//! (Usage errors exit 2, from clap.)

use super::error::ConfigError;
use super::model::Configuration;
use std::path::Path;

/// The summary line for valid files and their warnings, or every error.
pub fn check_files(
    deployment: &Path,
    application: &Path,
) -> Result<(String, Vec<String>), Vec<ConfigError>> {
    let (configuration, format) = super::load_with_format(deployment, application)?;
    let summary = format!(
        "ok: {}, application file in {}",
        configuration.summary(),
        format.describe()
    );
    Ok((summary, warnings(&configuration)))
}

/// What is valid but will not work as written on the nodes the deployment
/// names: more copies of a volume than nodes to hold them. (A deployment
/// naming no node says nothing of the cluster's size: no warning.)
fn warnings(configuration: &Configuration) -> Vec<String> {
    let named = configuration.deployment.pinned.len();
    if named == 0 {
        return Vec::new();
    }
    configuration
        .applications
        .iter()
        .filter_map(|(app, spec)| {
            let copies = spec.volume.as_ref()?.replicas as usize;
            (copies > named).then(|| {
                format!(
                    "{app}: volume.replicas asks for {copies} copies but the deployment names {named} node{}; \
                     the cluster keeps one copy per live node and says what it waits for",
                    if named == 1 { "" } else { "s" }
                )
            })
        })
        .collect()
}

/// Runs the command and returns its exit code.
pub fn run_check(deployment: &Path, application: &Path) -> u8 {
    match check_files(deployment, application) {
        Ok((summary, warnings)) => {
            for warning in warnings {
                eprintln!("warning: {warning}");
            }
            println!("{summary}");
            0
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            let n = errors.len();
            eprintln!("{n} error{} found", if n == 1 { "" } else { "s" });
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_copies_than_named_nodes_is_a_warning_not_an_error() {
        let c = super::super::parse(
            "version: 1\nnodes:\n  n1: [db]\n  n2: [web]\n",
            "deployment.yml",
            "version: 1\napplications:\n  db:\n    image: x\n    volume: {mountpoint: /d, replicas: 3}\n  web:\n    image: x\n    volume: {mountpoint: /w, replicas: 2}\n",
            "application.yml",
        )
        .expect("valid");
        let w = warnings(&c);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with(
                "db: volume.replicas asks for 3 copies but the deployment names 2 nodes"
            ),
            "{}",
            w[0]
        );
        let anywhere = super::super::parse(
            "version: 1\nanywhere: [db]\n",
            "deployment.yml",
            "version: 1\napplications:\n  db:\n    image: x\n    volume: {mountpoint: /d, replicas: 3}\n",
            "application.yml",
        )
        .expect("valid");
        assert!(
            warnings(&anywhere).is_empty(),
            "no node named: the cluster's size is unknown here"
        );
    }
}
