//! Who is on the other end of a connection, read from its certificate.
//!
//! A certificate's common name is the peer's name and its organisational unit
//! says whether it is a node or a user. The TLS layer has already checked the
//! chain to the cluster CA; this module only reads what the CA wrote.

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

/// The authenticated identity of a peer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub role: Role,
    pub name: String,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} '{}'", self.role.as_str(), self.name)
    }
}

impl Identity {
    /// Reads the identity from a DER certificate issued by `flocker ca`.
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
        Ok(Identity { role, name })
    }
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
