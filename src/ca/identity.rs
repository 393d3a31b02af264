//! Who is on the other end of a connection, read from its certificate.
//!
//! A certificate's common name is the peer's name and its organisational unit
//! says whether it is a node or a user. A user certificate also carries its
//! access level (viewer, operator, admin) in a flocker extension. The TLS
//! layer has already checked the chain to the cluster CA and the validity
//! period; this module only reads what the CA wrote.

use anyhow::{bail, Result};
use rustls_pki_types::CertificateDer;
use std::fmt;
use x509_parser::prelude::*;

/// The two kinds of certificate the cluster CA issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Role {
    /// A cluster member: may speak Raft and node-to-node RPCs.
    Node,
    /// An operator: may use the client API only.
    User,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Node => "node",
            Role::User => "user",
        }
    }
}

/// What a user certificate allows, each level including the ones below it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Access {
    /// Reads only: nodes, status, configuration, history.
    Viewer,
    /// Also deploys, moves, drains and activates nodes, sets labels.
    Operator,
    /// Also changes membership, recovers volumes and revokes certificates.
    Admin,
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Viewer => "viewer",
            Access::Operator => "operator",
            Access::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Result<Access> {
        match s {
            "viewer" => Ok(Access::Viewer),
            "operator" => Ok(Access::Operator),
            "admin" => Ok(Access::Admin),
            other => bail!("unknown role '{other}': use admin, operator or viewer"),
        }
    }
}

impl fmt::Display for Access {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The OID of the extension that carries a user certificate's [`Access`]
/// (a DER UTF8String: `admin`, `operator` or `viewer`). Under 2.25, the arc
/// for identifiers made without registration (ITU-T X.667).
pub const ACCESS_EXTENSION_OID: &[u64] = &[2, 25, 0x5f1c_9d2e_7b3a_4c81, 1];

/// The authenticated identity of a peer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub role: Role,
    pub name: String,
    /// A user's access level; `None` for node certificates.
    pub access: Option<Access>,
    /// SHA-256 of the certificate's DER, lowercase hex (what
    /// `openssl x509 -fingerprint -sha256` prints, without colons).
    pub fingerprint: String,
    /// End of the certificate's validity, seconds since the Unix epoch.
    pub not_after: i64,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} '{}'", self.role.as_str(), self.name)
    }
}

impl Identity {
    /// Reads the identity from a DER certificate issued by `flocker ca`.
    /// A user certificate without the access extension (issued before roles
    /// existed) is an admin's, as every user was then.
    pub fn from_der(der: &CertificateDer<'_>) -> Result<Identity> {
        let (_, cert) = X509Certificate::from_der(der.as_ref())
            .map_err(|e| anyhow::anyhow!("unparseable certificate: {e}"))?;
        let subject = cert.subject();
        let name = single_attr(subject.iter_common_name(), "common name")?;
        let role = match single_attr(subject.iter_organizational_unit(), "organizational unit")?
            .as_str()
        {
            "node" => Role::Node,
            "user" => Role::User,
            other => bail!("certificate for '{name}' has unknown role '{other}'"),
        };
        validate_name(&name)?;
        let access = match role {
            Role::Node => None,
            Role::User => Some(read_access(&cert, &name)?.unwrap_or(Access::Admin)),
        };
        Ok(Identity {
            role,
            name,
            access,
            fingerprint: fingerprint(der.as_ref()),
            not_after: cert.validity().not_after.timestamp(),
        })
    }

    /// The end of validity as a UTC date and time, for messages.
    pub fn expires(&self) -> String {
        format_unix(self.not_after)
    }
}

/// SHA-256 of a certificate's DER bytes in lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Accepts a fingerprint as `openssl` prints it (colons, any case) or bare.
pub fn normalize_fingerprint(text: &str) -> Result<String> {
    let hex: String = text
        .chars()
        .filter(|c| *c != ':')
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("'{text}' is not a SHA-256 fingerprint (64 hex digits, colons allowed)");
    }
    Ok(hex)
}

/// `2026-12-02 07:53:13 UTC` for seconds since the Unix epoch.
pub fn format_unix(secs: i64) -> String {
    let format =
        ::time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    ::time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&format).ok())
        .unwrap_or_else(|| format!("{secs} s after the Unix epoch"))
}

fn read_access(cert: &X509Certificate<'_>, name: &str) -> Result<Option<Access>> {
    let wanted = ACCESS_EXTENSION_OID
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".");
    for ext in cert.extensions() {
        if ext.oid.to_id_string() != wanted {
            continue;
        }
        // A DER UTF8String: tag 0x0c, a short length, the text.
        let text = match ext.value {
            [0x0c, len, rest @ ..] if usize::from(*len) == rest.len() && *len < 0x80 => {
                std::str::from_utf8(rest).ok()
            }
            _ => None,
        };
        let Some(text) = text else {
            bail!("certificate for '{name}' has an unreadable role extension");
        };
        return Access::parse(text).map(Some);
    }
    Ok(None)
}

/// The DER content of the access extension for `access`.
pub fn access_extension_content(access: Access) -> Vec<u8> {
    let text = access.as_str().as_bytes();
    let mut der = vec![0x0c, text.len() as u8];
    der.extend_from_slice(text);
    der
}

/// The Raft node id of the node named `name`. Ids derive from names so that a
/// node's identity in the cluster is exactly the name in its certificate, and
/// every node computes the same ids from the same `--peers` with no exchange.
/// (Collisions among 63-bit hashes of a few hundred names are negligible and
/// refused when a member is added.)
pub fn node_id_for(name: &str) -> u64 {
    let hash = blake3::hash(name.as_bytes());
    let bytes: [u8; 8] = hash.as_bytes()[..8].try_into().expect("8 bytes");
    u64::from_be_bytes(bytes) >> 1
}

fn single_attr<'a>(
    mut attrs: impl Iterator<Item = &'a AttributeTypeAndValue<'a>>,
    what: &str,
) -> Result<String> {
    let Some(first) = attrs.next() else {
        bail!("certificate has no {what}");
    };
    if attrs.next().is_some() {
        bail!("certificate has more than one {what}");
    }
    match first.as_str() {
        Ok(s) => Ok(s.to_string()),
        Err(_) => bail!("certificate {what} is not a string"),
    }
}

/// Node and user names: 1–63 characters of lowercase letters, digits and `-`,
/// starting with a letter or digit, so they are safe in DNS names, file names
/// and Docker container names alike.
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-');
    if !ok {
        bail!(
            "invalid name '{name}': use 1-63 lowercase letters, digits and '-', not starting with '-'"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(validate_name("n1").is_ok());
        assert!(validate_name("web-3").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("-x").is_err());
        assert!(validate_name("N1").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name(&"a".repeat(64)).is_err());
    }
}
