//! `flocker ca bundle`: what one node or user needs and nothing more — the
//! CA certificate and its own certificate and key, in the layout a certs
//! directory has, never the CA's private key. A node started from a bundle
//! cannot mint certificates if its host is compromised.

use super::files::{load_cert, sync_dir, write_new};
use super::{CertsDir, Identity, Role};
use anyhow::{bail, Context, Result};
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// Copies `ca.crt` and the certificate and key of `role` `name` from the CA
/// directory `dir` into `out` (created if needed), and returns the files
/// written. Refuses to overwrite any file already in `out`.
pub fn bundle(dir: &Path, role: Role, name: &str, out: &Path) -> Result<Vec<PathBuf>> {
    let from = CertsDir::new(dir);
    let to = CertsDir::new(out);
    let cert = fs::read(from.cert(role, name))
        .with_context(|| format!("reading {}", from.cert(role, name).display()))?;
    let der = load_cert(&from.cert(role, name))?;
    let identity = Identity::from_der(&der)
        .with_context(|| format!("reading {}", from.cert(role, name).display()))?;
    if identity.role != role || identity.name != name {
        bail!(
            "{} is the certificate of {identity}, not of {} '{name}'",
            from.cert(role, name).display(),
            role.as_str()
        );
    }
    let key = fs::read(from.key(role, name))
        .with_context(|| format!("reading {}", from.key(role, name).display()))?;
    let ca = fs::read(from.ca_cert())
        .with_context(|| format!("reading {}", from.ca_cert().display()))?;
    let files = [
        (to.ca_cert(), ca, 0o644),
        (to.cert(role, name), cert, 0o644),
        (to.key(role, name), key, 0o600),
    ];
    for (path, _, _) in &files {
        if path.exists() {
            bail!(
                "{} already exists; refusing to overwrite it (bundle into an empty directory)",
                path.display()
            );
        }
    }
    for (path, contents, mode) in &files {
        let parent = path.parent().context("a bundle file has a parent")?;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        write_new(path, contents, *mode)?;
        sync_dir(parent)?;
    }
    Ok(files.into_iter().map(|(path, _, _)| path).collect())
}
