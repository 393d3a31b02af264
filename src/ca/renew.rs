//! `flocker ca renew`: a fresh key and certificate for a name that already
//! has one. The old pair is kept aside (`NAME.crt.replaced-<unix time>`), so
//! a renewal done by mistake can be undone by hand, and the new files replace
//! the old ones by rename, so a reader sees either the old file or the new.

use super::files::{load_cert, sync_dir, Staged};
use super::{make, Access, CertsDir, Identity, Role, Subject, Validity};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// What a renewal wrote and kept.
#[derive(Debug, Clone)]
pub struct Renewed {
    /// The new certificate's identity (with its new fingerprint and expiry).
    pub identity: Identity,
    pub cert: PathBuf,
    /// Where the old certificate and key now are.
    pub replaced_cert: PathBuf,
    pub replaced_key: Option<PathBuf>,
}

/// Replaces the certificate of `role` `name` in the CA directory `dir` with a
/// new one (new key, same name). A user keeps its access level unless
/// `access` gives another. The old certificate stays valid until it expires
/// or is revoked: renewal is not revocation.
pub fn renew(
    dir: &Path,
    role: Role,
    name: &str,
    access: Option<Access>,
    validity: Validity,
) -> Result<Renewed> {
    let certs = CertsDir::new(dir);
    let (cert_path, key_path) = (certs.cert(role, name), certs.key(role, name));
    if !cert_path.exists() {
        bail!(
            "{} does not exist: there is no certificate to renew (`flocker ca issue` makes a first one)",
            cert_path.display()
        );
    }
    let old = Identity::from_der(&load_cert(&cert_path)?)
        .with_context(|| format!("reading {}", cert_path.display()))?;
    if old.role != role || old.name != name {
        bail!(
            "{} is the certificate of {old}, not of {} '{name}'",
            cert_path.display(),
            role.as_str()
        );
    }
    let subject = match role {
        Role::Node => {
            if access.is_some() {
                bail!("--role applies to user certificates only");
            }
            Subject::Node(name.to_string())
        }
        Role::User => Subject::User {
            name: name.to_string(),
            access: access.or(old.access).unwrap_or(Access::Admin),
        },
    };
    // A node keeps the addresses and names `--san` gave it.
    let sans = match role {
        Role::Node => super::extra_sans(&load_cert(&cert_path)?, name),
        Role::User => Vec::new(),
    };
    let made = make(&certs, &subject, validity, &sans)?;
    let new_key = Staged::write(&key_path, made.key_pem.as_bytes(), 0o600)?;
    let new_cert = Staged::write(&cert_path, made.cert_pem.as_bytes(), 0o644)?;

    let stamp = unix_now();
    let replaced_cert = keep_aside(&cert_path, stamp)?;
    let replaced_key = if key_path.exists() {
        Some(keep_aside(&key_path, stamp)?)
    } else {
        None
    };
    new_key.commit()?;
    new_cert.commit()?;
    let identity = Identity::from_der(&load_cert(&cert_path)?)?;
    Ok(Renewed {
        identity,
        cert: cert_path,
        replaced_cert,
        replaced_key,
    })
}

/// Hard-links `path` to `<path>.replaced-<stamp>` (or `...-<stamp>.<n>` when
/// that exists), leaving `path` in place for the rename that replaces it.
fn keep_aside(path: &Path, stamp: u64) -> Result<PathBuf> {
    let base = format!("{}.replaced-{stamp}", path.display());
    for n in 0..100u32 {
        let aside = if n == 0 {
            PathBuf::from(&base)
        } else {
            PathBuf::from(format!("{base}.{n}"))
        };
        match fs::hard_link(path, &aside) {
            Ok(()) => {
                if let Some(dir) = aside.parent() {
                    sync_dir(dir)?;
                }
                return Ok(aside);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("keeping {} aside as {}", path.display(), aside.display())
                })
            }
        }
    }
    bail!("{base} and 99 more like it exist: clean up old replaced certificates")
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
