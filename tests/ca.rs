//! `flocker ca`: a cluster CA with node and user certificates, private keys
//! readable only by their owner, later issuance, and no silent overwrites.

mod common;

use common::BIN;
use flocker::ca::{CertsDir, Identity, Role};
use flocker::net::tls::load_cert;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn flocker(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run flocker")
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn init_and_issue_write_distinguishable_certificates_with_private_keys() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    let d = dir.to_str().unwrap();
    let out = flocker(&[
        "ca", "init", "--dir", d, "--nodes", "n1,n2,n3", "--users", "admin",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let certs = CertsDir::new(&dir);
    assert_eq!(mode(&certs.ca_key()), 0o600);
    for n in ["n1", "n2", "n3"] {
        assert_eq!(mode(&certs.key(Role::Node, n)), 0o600, "{n} key mode");
        let id = Identity::from_der(&load_cert(&certs.cert(Role::Node, n)).unwrap()).unwrap();
        assert_eq!(
            (id.role, id.name.as_str(), id.access),
            (Role::Node, n, None)
        );
        assert_eq!(id.fingerprint.len(), 64, "SHA-256 in hex");
    }
    assert_eq!(mode(&certs.key(Role::User, "admin")), 0o600);
    let admin = Identity::from_der(&load_cert(&certs.cert(Role::User, "admin")).unwrap()).unwrap();
    assert_eq!(admin.role, Role::User);

    // Later issuance from the same CA.
    let out = flocker(&["ca", "issue", "--dir", d, "--node", "n4"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&certs.key(Role::Node, "n4")), 0o600);
    let out = flocker(&["ca", "issue", "--dir", d, "--user", "ops"]);
    assert!(out.status.success());
    let ops = Identity::from_der(&load_cert(&certs.cert(Role::User, "ops")).unwrap()).unwrap();
    assert_eq!((ops.role, ops.name.as_str()), (Role::User, "ops"));

    // Nothing is overwritten, and bad names are refused.
    let ca_before = std::fs::read(certs.ca_cert()).unwrap();
    let out = flocker(&["ca", "init", "--dir", d, "--nodes", "n1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to overwrite"));
    assert_eq!(std::fs::read(certs.ca_cert()).unwrap(), ca_before);
    let out = flocker(&["ca", "issue", "--dir", d, "--node", "n1"]);
    assert_eq!(out.status.code(), Some(1));
    let out = flocker(&["ca", "issue", "--dir", d, "--node", "Bad/Name"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid name"));
}
