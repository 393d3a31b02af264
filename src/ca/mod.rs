//! The cluster's own certificate authority: `flocker ca init`, `issue`,
//! `renew`, `bundle` and `fingerprint`.
//!
//! Owns the on-disk layout of a certs directory and the making of
//! certificates: who they name, their role and access level, and how long
//! they last. It does not load certificates into TLS configurations (that is
//! `net::tls`) and does not decide what a peer may do (that is each
//! service's check of its [`Identity`]).

mod bundle;
mod files;
mod identity;
mod renew;

pub use bundle::{bundle, p12};
pub use identity::{
    access_extension_content, fingerprint, format_unix, node_id_for, normalize_fingerprint,
    validate_name, Access, Identity, Role, ACCESS_EXTENSION_OID,
};
pub use renew::{renew, Renewed};

use anyhow::{bail, Context, Result};
pub use files::load_cert;
use files::write_new;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use std::fs;
use std::path::{Path, PathBuf};

/// The DNS name every node certificate carries: clients that only know an
/// address verify the server against it, then read the node's real name from
/// the certificate.
pub const NODE_SERVER_NAME: &str = "node.flocker";

/// How long the CA itself is valid. Long, because replacing it means
/// reissuing every certificate; its key stays on the admin's machine.
const CA_VALIDITY_DAYS: u32 = 3650;

/// Default validity of node and user certificates: a year, so a lost or
/// forgotten credential stops working on its own; `flocker ca renew` makes
/// the next one.
pub const DEFAULT_VALIDITY_DAYS: u32 = 365;

/// How long a certificate is valid, counted from now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    /// Valid from a day ago (tolerating clocks a little behind) for this
    /// many days from now.
    Days(u32),
    /// Already expired this many days ago: for tests of how an expired
    /// certificate is refused.
    ExpiredDaysAgo(u32),
}

impl Default for Validity {
    fn default() -> Self {
        Validity::Days(DEFAULT_VALIDITY_DAYS)
    }
}

impl Validity {
    fn apply(self, params: &mut CertificateParams) {
        let now = time::OffsetDateTime::now_utc();
        let days = |n: u32| time::Duration::days(i64::from(n));
        let (not_before, not_after) = match self {
            Validity::Days(n) => (now - days(1), now + days(n)),
            Validity::ExpiredDaysAgo(n) => {
                let not_after = now - days(n);
                (not_after - days(2), not_after)
            }
        };
        params.not_before = not_before;
        params.not_after = not_after;
    }
}

/// Whom a certificate names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    Node(String),
    User { name: String, access: Access },
}

impl Subject {
    pub fn role(&self) -> Role {
        match self {
            Subject::Node(_) => Role::Node,
            Subject::User { .. } => Role::User,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Subject::Node(name) | Subject::User { name, .. } => name,
        }
    }

    /// `Subject::User` with the default access, admin.
    pub fn user(name: impl Into<String>) -> Subject {
        Subject::User {
            name: name.into(),
            access: Access::Admin,
        }
    }

    /// Reads `NAME` or `NAME:ROLE` (`ca init --users alice,bob:viewer`);
    /// a user without a role is an admin.
    pub fn parse_user(spec: &str) -> Result<Subject> {
        let (name, access) = match spec.split_once(':') {
            Some((name, role)) => (name, Access::parse(role)?),
            None => (spec, Access::Admin),
        };
        validate_name(name).with_context(|| format!("user '{spec}'"))?;
        Ok(Subject::User {
            name: name.to_string(),
            access,
        })
    }
}

/// Paths of one certs directory.
#[derive(Debug, Clone)]
pub struct CertsDir {
    pub root: PathBuf,
}

impl CertsDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        CertsDir { root: root.into() }
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.crt")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.root.join("ca.key")
    }
    fn role_dir(&self, role: Role) -> PathBuf {
        self.root.join(match role {
            Role::Node => "nodes",
            Role::User => "users",
        })
    }
    pub fn cert(&self, role: Role, name: &str) -> PathBuf {
        self.role_dir(role).join(format!("{name}.crt"))
    }
    pub fn key(&self, role: Role, name: &str) -> PathBuf {
        self.role_dir(role).join(format!("{name}.key"))
    }
}

/// Creates a new CA in `dir` and issues the named node and user
/// certificates, each valid for `validity`. Refuses to overwrite an
/// existing CA: that would orphan every issued certificate.
pub fn init(dir: &Path, nodes: &[String], users: &[Subject], validity: Validity) -> Result<()> {
    init_with_sans(dir, nodes, users, validity, &[])
}

/// As [`init`], with `sans` (IP addresses and DNS names the nodes serve
/// the HTTPS API at) added to every node certificate.
pub fn init_with_sans(
    dir: &Path,
    nodes: &[String],
    users: &[Subject],
    validity: Validity,
    sans: &[String],
) -> Result<()> {
    check_sans(sans)?;
    let certs = CertsDir::new(dir);
    if certs.ca_cert().exists() || certs.ca_key().exists() {
        bail!(
            "{} already holds a cluster CA; refusing to overwrite it (use `flocker ca issue` to add certificates)",
            dir.display()
        );
    }
    let subjects: Vec<Subject> = nodes
        .iter()
        .map(|n| Subject::Node(n.clone()))
        .chain(users.iter().cloned())
        .collect();
    for (i, subject) in subjects.iter().enumerate() {
        validate_name(subject.name())?;
        if subjects[..i]
            .iter()
            .any(|s| s.role() == subject.role() && s.name() == subject.name())
        {
            bail!(
                "{} '{}' is named twice",
                subject.role().as_str(),
                subject.name()
            );
        }
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = KeyPair::generate().context("generating the CA key")?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    // A distinct name per cluster, so a certificate from another cluster's CA
    // is reported as from an unknown issuer.
    let ca_name = format!("flocker cluster CA {:08x}", rand::random::<u32>());
    dn.push(DnType::CommonName, ca_name);
    dn.push(DnType::OrganizationName, "flocker");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Validity::Days(CA_VALIDITY_DAYS).apply(&mut params);
    let cert = params
        .self_signed(&key)
        .context("signing the CA certificate")?;
    write_new(&certs.ca_key(), key.serialize_pem().as_bytes(), 0o600)?;
    write_new(&certs.ca_cert(), cert.pem().as_bytes(), 0o644)?;
    for subject in &subjects {
        let sans = if subject.role() == Role::Node {
            sans
        } else {
            &[]
        };
        issue_with_sans(dir, subject, validity, sans)?;
    }
    Ok(())
}

/// Issues one node or user certificate signed by the CA in `dir`, and
/// returns the path of the new certificate (its key lies beside it).
/// Refuses to overwrite an existing certificate: `renew` replaces one.
pub fn issue(dir: &Path, subject: &Subject, validity: Validity) -> Result<PathBuf> {
    issue_with_sans(dir, subject, validity, &[])
}

/// As [`issue`], with `sans` added to a node certificate (`--san`): the
/// addresses and DNS names clients reach its HTTPS API at, so they verify
/// it without being told to expect `node.flocker`.
pub fn issue_with_sans(
    dir: &Path,
    subject: &Subject,
    validity: Validity,
    sans: &[String],
) -> Result<PathBuf> {
    check_sans(sans)?;
    if !sans.is_empty() && subject.role() == Role::User {
        bail!("--san applies to node certificates only (a user certificate is a client's)");
    }
    let certs = CertsDir::new(dir);
    let (role, name) = (subject.role(), subject.name());
    let cert_path = certs.cert(role, name);
    if cert_path.exists() {
        bail!(
            "{} already exists; refusing to overwrite it (`flocker ca renew` replaces a certificate)",
            cert_path.display()
        );
    }
    let made = make(&certs, subject, validity, sans)?;
    let parent = cert_path
        .parent()
        .context("a certificate path has a parent directory")?;
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    write_new(&certs.key(role, name), made.key_pem.as_bytes(), 0o600)?;
    write_new(&cert_path, made.cert_pem.as_bytes(), 0o644)?;
    Ok(cert_path)
}

/// A freshly made key and certificate, not yet on disk.
struct Made {
    key_pem: String,
    cert_pem: String,
}

/// Makes a new key and a certificate for `subject`, signed by the CA in `certs`.
fn make(certs: &CertsDir, subject: &Subject, validity: Validity, extra: &[String]) -> Result<Made> {
    let (role, name) = (subject.role(), subject.name());
    validate_name(name)?;
    let ca_key_pem = fs::read_to_string(certs.ca_key())
        .with_context(|| format!("reading the CA key {}", certs.ca_key().display()))?;
    let ca_cert_pem = fs::read_to_string(certs.ca_cert())
        .with_context(|| format!("reading the CA certificate {}", certs.ca_cert().display()))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem)
        .with_context(|| format!("parsing {}", certs.ca_key().display()))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, ca_key)
        .with_context(|| format!("parsing {}", certs.ca_cert().display()))?;

    let mut sans = vec![format!("{name}.{}.flocker", role.as_str())];
    if role == Role::Node {
        sans.push(NODE_SERVER_NAME.to_string());
        sans.extend(
            extra
                .iter()
                .filter(|s| !sans.contains(s))
                .cloned()
                .collect::<Vec<_>>(),
        );
    }
    let mut params = CertificateParams::new(sans)?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "flocker");
    dn.push(DnType::OrganizationalUnitName, role.as_str());
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    // A user certificate can only be a TLS client: without serverAuth and the
    // node server name it can never pose as a node to anyone.
    params.extended_key_usages = match role {
        Role::Node => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Role::User => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    if let Subject::User { access, .. } = subject {
        // Not critical: verifiers that do not know it (webpki) must still
        // accept the certificate; only flocker reads it.
        params
            .custom_extensions
            .push(CustomExtension::from_oid_content(
                ACCESS_EXTENSION_OID,
                access_extension_content(*access),
            ));
    }
    validity.apply(&mut params);
    let key = KeyPair::generate().context("generating a key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .with_context(|| format!("signing the certificate for {} {name}", role.as_str()))?;
    Ok(Made {
        key_pem: key.serialize_pem(),
        cert_pem: cert.pem(),
    })
}

/// The SHA-256 fingerprint of the PEM certificate in `path`, as
/// `ctl revoke --fingerprint` takes it.
pub fn fingerprint_file(path: &Path) -> Result<String> {
    let der = load_cert(path)?;
    Ok(fingerprint(der.as_ref()))
}

/// Refuses a `--san` that is neither an IP address nor a DNS name.
pub fn check_sans(sans: &[String]) -> Result<()> {
    for san in sans {
        if san.parse::<std::net::IpAddr>().is_ok() {
            continue;
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        };
        if san.is_empty() || san.len() > 253 || !san.split('.').all(label_ok) {
            bail!("--san '{san}' is neither an IP address nor a DNS name");
        }
    }
    Ok(())
}

/// The names a node certificate carries besides its own and
/// `node.flocker` (what `--san` added), so a renewal keeps them.
pub fn extra_sans(der: &rustls_pki_types::CertificateDer<'_>, name: &str) -> Vec<String> {
    use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
    let Ok((_, cert)) = X509Certificate::from_der(der.as_ref()) else {
        return Vec::new();
    };
    let own = format!("{name}.{}.flocker", Role::Node.as_str());
    let Ok(Some(ext)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    ext.value
        .general_names
        .iter()
        .filter_map(|g| match g {
            GeneralName::DNSName(d) => Some(d.to_string()),
            GeneralName::IPAddress(b) => match b.len() {
                4 => <[u8; 4]>::try_from(*b)
                    .ok()
                    .map(|a| std::net::IpAddr::from(a).to_string()),
                16 => <[u8; 16]>::try_from(*b)
                    .ok()
                    .map(|a| std::net::IpAddr::from(a).to_string()),
                _ => None,
            },
            _ => None,
        })
        .filter(|s| *s != own && s != NODE_SERVER_NAME)
        .collect()
}
