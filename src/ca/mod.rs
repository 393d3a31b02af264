//! The cluster's own certificate authority: `flocker ca init` and `flocker ca issue`.
//!
//! Owns the on-disk layout of a certs directory and the making of certificates.
//! It does not load certificates into TLS configurations (that is `net::tls`)
//! and does not decide what a peer may do (that is each service's check of its
//! [`Identity`]).

mod identity;

pub use identity::{
    access_extension_content, fingerprint, format_unix, node_id_for, normalize_fingerprint,
    validate_name, Access, Identity, Role, ACCESS_EXTENSION_OID,
};

use anyhow::{bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The DNS name every node certificate carries: clients that only know an
/// address verify the server against it, then read the node's real name from
/// the certificate.
pub const NODE_SERVER_NAME: &str = "node.flocker";

/// How long certificates are valid. Rotation is a later issue; ten years keeps
/// a test cluster from expiring under an operator's feet.
const VALIDITY_DAYS: i64 = 3650;

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

/// Creates a new CA in `dir` and issues the named node and user certificates.
/// Refuses to overwrite an existing CA: that would orphan every issued certificate.
pub fn init(dir: &Path, nodes: &[String], users: &[String]) -> Result<()> {
    let certs = CertsDir::new(dir);
    if certs.ca_cert().exists() || certs.ca_key().exists() {
        bail!(
            "{} already holds a cluster CA; refusing to overwrite it (use `flocker ca issue` to add certificates)",
            dir.display()
        );
    }
    for name in nodes.iter().chain(users) {
        validate_name(name)?;
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
    set_validity(&mut params);
    let cert = params
        .self_signed(&key)
        .context("signing the CA certificate")?;
    write_file(&certs.ca_key(), key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&certs.ca_cert(), cert.pem().as_bytes(), 0o644)?;
    for name in nodes {
        issue(dir, Role::Node, name)?;
    }
    for name in users {
        issue(dir, Role::User, name)?;
    }
    Ok(())
}

/// Issues one node or user certificate signed by the CA in `dir`.
pub fn issue(dir: &Path, role: Role, name: &str) -> Result<()> {
    validate_name(name)?;
    let certs = CertsDir::new(dir);
    let ca_key_pem = fs::read_to_string(certs.ca_key())
        .with_context(|| format!("reading the CA key {}", certs.ca_key().display()))?;
    let ca_cert_pem = fs::read_to_string(certs.ca_cert())
        .with_context(|| format!("reading the CA certificate {}", certs.ca_cert().display()))?;
    let ca_key = KeyPair::from_pem(&ca_key_pem)
        .with_context(|| format!("parsing {}", certs.ca_key().display()))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_cert_pem, ca_key)
        .with_context(|| format!("parsing {}", certs.ca_cert().display()))?;

    let (cert_path, key_path) = (certs.cert(role, name), certs.key(role, name));
    if cert_path.exists() {
        bail!(
            "{} already exists; refusing to overwrite it",
            cert_path.display()
        );
    }
    let mut sans = vec![format!("{name}.{}.flocker", role.as_str())];
    if role == Role::Node {
        sans.push(NODE_SERVER_NAME.to_string());
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
    set_validity(&mut params);
    let key = KeyPair::generate().context("generating a key")?;
    let cert = params
        .signed_by(&key, &issuer)
        .with_context(|| format!("signing the certificate for {} {name}", role.as_str()))?;
    fs::create_dir_all(cert_path.parent().expect("cert path has a parent"))?;
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(())
}

fn set_validity(params: &mut CertificateParams) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(VALIDITY_DAYS);
}

fn write_file(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents)?;
    file.sync_all()?;
    Ok(())
}
