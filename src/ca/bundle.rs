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
        write_into_bundle(path, contents, *mode)?;
    }
    Ok(files.into_iter().map(|(path, _, _)| path).collect())
}

/// `ca bundle --user NAME --p12`: the user's certificate and key, with the
/// CA certificate as its chain, as one PKCS#12 file for a browser's
/// certificate store (`OUT/users/NAME.p12`, 0600). Protected by a fresh
/// random password, returned to be shown once and never stored.
pub fn p12(dir: &Path, name: &str, out: &Path) -> Result<(PathBuf, String)> {
    use p12_keystore::{Certificate, KeyStore, KeyStoreEntry, PrivateKey, PrivateKeyChain};
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::PrivateKeyDer;
    let from = CertsDir::new(dir);
    let cert = load_cert(&from.cert(Role::User, name))?;
    let ca = load_cert(&from.ca_cert())?;
    let key = PrivateKeyDer::from_pem_file(from.key(Role::User, name))
        .with_context(|| format!("reading {}", from.key(Role::User, name).display()))?;
    let PrivateKeyDer::Pkcs8(key) = key else {
        bail!(
            "{} is not a PKCS#8 key",
            from.key(Role::User, name).display()
        );
    };
    let unreadable = |e: p12_keystore::error::Error| anyhow::anyhow!("{e}");
    let chain = PrivateKeyChain::new(
        crate::ca::fingerprint(cert.as_ref()).as_bytes(),
        PrivateKey::from_der(key.secret_pkcs8_der()).map_err(unreadable)?,
        [
            Certificate::from_der(cert.as_ref()).map_err(unreadable)?,
            Certificate::from_der(ca.as_ref()).map_err(unreadable)?,
        ],
    );
    let mut store = KeyStore::new();
    store.add_entry(name, KeyStoreEntry::PrivateKeyChain(chain));
    let password = format!("{:024x}", rand::random::<u128>() >> 32);
    let bytes = store
        .writer(&password)
        .write()
        .map_err(|e| anyhow::anyhow!("writing PKCS#12: {e}"))?;
    let path = CertsDir::new(out)
        .cert(Role::User, name)
        .with_extension("p12");
    write_into_bundle(&path, &bytes, 0o600)?;
    Ok((path, password))
}

/// Writes a new file of a bundle, its directory created private (0700).
fn write_into_bundle(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let parent = path.parent().context("a bundle file has a parent")?;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .with_context(|| format!("creating {}", parent.display()))?;
    write_new(path, contents, mode)?;
    sync_dir(parent)
}
