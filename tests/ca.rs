//! `flocker ca`: a cluster CA with node and user certificates, private keys
//! readable only by their owner, later issuance, and no silent overwrites;
//! roles, validity, renewal, per-node bundles, fingerprints; and a node that
//! refuses to run with the CA key beside it.

mod common;

use common::{ctl_at, free_addr, wait_until, BIN};
use flocker::ca::{Access, CertsDir, Identity, Role};
use flocker::net::tls::load_cert;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

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
    assert_eq!(
        (ops.role, ops.name.as_str(), ops.access),
        (Role::User, "ops", Some(Access::Admin))
    );

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

fn ok(args: &[&str]) -> String {
    let out = flocker(args);
    assert!(
        out.status.success(),
        "flocker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Exit code and stderr of a command expected to fail.
fn refused(args: &[&str]) -> (Option<i32>, String) {
    let out = flocker(args);
    assert!(!out.status.success(), "flocker {args:?} should fail");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn identity(path: &Path) -> Identity {
    Identity::from_der(&load_cert(path).unwrap()).unwrap()
}

fn unix_now() -> i64 {
    common::unix_now() as i64
}

const DAY: i64 = 86_400;

/// A CA with nodes n1, n2 and users alice (admin by default) and bob (viewer).
fn ca_dir(tmp: &tempfile::TempDir) -> (PathBuf, CertsDir) {
    let dir = tmp.path().join("ca");
    ok(&[
        "ca",
        "init",
        "--dir",
        dir.to_str().unwrap(),
        "--nodes",
        "n1,n2",
        "--users",
        "alice,bob:viewer",
    ]);
    let certs = CertsDir::new(&dir);
    (dir, certs)
}

#[test]
fn roles_are_written_into_user_certificates_and_default_to_admin() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, certs) = ca_dir(&tmp);
    let d = dir.to_str().unwrap();
    let access = |name: &str| identity(&certs.cert(Role::User, name)).access;
    assert_eq!(access("alice"), Some(Access::Admin));
    assert_eq!(access("bob"), Some(Access::Viewer));

    ok(&[
        "ca", "issue", "--dir", d, "--user", "ops", "--role", "operator",
    ]);
    ok(&["ca", "issue", "--dir", d, "--user", "root"]);
    assert_eq!(access("ops"), Some(Access::Operator));
    assert_eq!(access("root"), Some(Access::Admin));
    assert_eq!(identity(&certs.cert(Role::Node, "n1")).access, None);

    let (code, err) = refused(&["ca", "issue", "--dir", d, "--user", "x", "--role", "god"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("unknown role 'god'"), "{err}");
    let (code, err) = refused(&[
        "ca", "issue", "--dir", d, "--node", "n9", "--role", "viewer",
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("user certificates only"), "{err}");
    assert!(!certs.cert(Role::Node, "n9").exists());
    let (_, err) = refused(&["ca", "init", "--dir", &format!("{d}2"), "--users", "a:boss"]);
    assert!(err.contains("unknown role 'boss'"), "{err}");
}

#[test]
fn certificates_last_a_year_unless_told_and_can_be_issued_already_expired() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, certs) = ca_dir(&tmp);
    let d = dir.to_str().unwrap();
    let now = unix_now();
    let n1 = identity(&certs.cert(Role::Node, "n1"));
    assert!(
        (n1.not_after - (now + 365 * DAY)).abs() < DAY,
        "{}",
        n1.expires()
    );
    let ca = identity_of_ca(&certs.ca_cert());
    assert!(ca > now + 9 * 365 * DAY, "the CA itself lasts ten years");

    ok(&["ca", "issue", "--dir", d, "--node", "n3", "--days", "30"]);
    let n3 = identity(&certs.cert(Role::Node, "n3"));
    assert!(
        (n3.not_after - (now + 30 * DAY)).abs() < DAY,
        "{}",
        n3.expires()
    );

    let out = ok(&[
        "ca",
        "issue",
        "--dir",
        d,
        "--user",
        "old",
        "--expired-days-ago",
        "3",
    ]);
    let old = identity(&certs.cert(Role::User, "old"));
    assert!(
        (old.not_after - (now - 3 * DAY)).abs() < DAY,
        "{}",
        old.expires()
    );
    assert!(
        out.contains(&format!("expired on {}", old.expires())),
        "{out}"
    );

    let (code, _) = refused(&["ca", "issue", "--dir", d, "--node", "n4", "--days", "0"]);
    assert_eq!(code, Some(2), "a validity of 0 days is a usage error");
}

/// The CA certificate's notAfter (it is not a flocker identity).
fn identity_of_ca(path: &Path) -> i64 {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let der = load_cert(path).unwrap();
    let (_, cert) = X509Certificate::from_der(der.as_ref()).unwrap();
    cert.validity().not_after.timestamp()
}

#[test]
fn renew_keeps_name_and_role_and_changes_the_key_and_fingerprint() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, certs) = ca_dir(&tmp);
    let d = dir.to_str().unwrap();
    let before = identity(&certs.cert(Role::User, "bob"));
    let key_before = std::fs::read(certs.key(Role::User, "bob")).unwrap();

    let out = ok(&["ca", "renew", "--dir", d, "--user", "bob", "--days", "90"]);
    let after = identity(&certs.cert(Role::User, "bob"));
    assert_eq!(
        (after.role, after.name.as_str(), after.access),
        (Role::User, "bob", Some(Access::Viewer))
    );
    assert_ne!(after.fingerprint, before.fingerprint);
    assert_ne!(
        std::fs::read(certs.key(Role::User, "bob")).unwrap(),
        key_before
    );
    assert_eq!(mode(&certs.key(Role::User, "bob")), 0o600);
    assert!((after.not_after - (unix_now() + 90 * DAY)).abs() < DAY);
    // The old pair is kept aside, unchanged.
    let kept: Vec<PathBuf> = std::fs::read_dir(dir.join("users"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".replaced-"))
        .collect();
    assert_eq!(kept.len(), 2, "{kept:?}");
    let old_cert = kept
        .iter()
        .find(|p| p.to_string_lossy().contains("bob.crt.replaced-"))
        .expect("old certificate kept");
    assert!(out.contains(&old_cert.display().to_string()), "{out}");
    assert_eq!(identity(old_cert).fingerprint, before.fingerprint);
    let old_key = kept
        .iter()
        .find(|p| p.to_string_lossy().contains("bob.key.replaced-"))
        .expect("old key kept");
    assert_eq!(std::fs::read(old_key).unwrap(), key_before);
    assert_eq!(mode(old_key), 0o600);

    // A role can be changed on renewal; a node renews as a node.
    ok(&[
        "ca", "renew", "--dir", d, "--user", "bob", "--role", "operator",
    ]);
    assert_eq!(
        identity(&certs.cert(Role::User, "bob")).access,
        Some(Access::Operator)
    );
    let n1 = identity(&certs.cert(Role::Node, "n1"));
    ok(&["ca", "renew", "--dir", d, "--node", "n1"]);
    let renewed = identity(&certs.cert(Role::Node, "n1"));
    assert_eq!((renewed.role, renewed.name.as_str()), (Role::Node, "n1"));
    assert_ne!(renewed.fingerprint, n1.fingerprint);

    let (code, err) = refused(&["ca", "renew", "--dir", d, "--node", "n7"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no certificate to renew"), "{err}");
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found.sort();
    found
}

#[test]
fn a_bundle_holds_exactly_what_one_node_or_user_needs() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, certs) = ca_dir(&tmp);
    let d = dir.to_str().unwrap();
    let out = tmp.path().join("n2-bundle");
    ok(&[
        "ca",
        "bundle",
        "--dir",
        d,
        "--node",
        "n2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        files_under(&out),
        ["ca.crt", "nodes/n2.crt", "nodes/n2.key"]
    );
    let bundle = CertsDir::new(&out);
    assert_eq!(mode(&bundle.key(Role::Node, "n2")), 0o600);
    for (from, to) in [
        (certs.ca_cert(), bundle.ca_cert()),
        (certs.cert(Role::Node, "n2"), bundle.cert(Role::Node, "n2")),
        (certs.key(Role::Node, "n2"), bundle.key(Role::Node, "n2")),
    ] {
        assert_eq!(std::fs::read(from).unwrap(), std::fs::read(to).unwrap());
    }
    // Nothing is overwritten.
    let (code, err) = refused(&[
        "ca",
        "bundle",
        "--dir",
        d,
        "--node",
        "n2",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1));
    assert!(err.contains("refusing to overwrite"), "{err}");

    let user = tmp.path().join("bob-bundle");
    ok(&[
        "ca",
        "bundle",
        "--dir",
        d,
        "--user",
        "bob",
        "--out",
        user.to_str().unwrap(),
    ]);
    assert_eq!(
        files_under(&user),
        ["ca.crt", "users/bob.crt", "users/bob.key"]
    );
    assert_eq!(mode(&CertsDir::new(&user).key(Role::User, "bob")), 0o600);

    let (code, _) = refused(&[
        "ca",
        "bundle",
        "--dir",
        d,
        "--node",
        "n9",
        "--out",
        tmp.path().join("n9").to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1));
}

#[test]
fn the_fingerprint_command_prints_the_certificates_sha256() {
    let tmp = tempfile::tempdir().unwrap();
    let (_, certs) = ca_dir(&tmp);
    for path in [certs.cert(Role::User, "bob"), certs.cert(Role::Node, "n1")] {
        let out = ok(&["ca", "fingerprint", path.to_str().unwrap()]);
        assert_eq!(out.trim(), identity(&path).fingerprint);
    }
    let (code, _) = refused(&[
        "ca",
        "fingerprint",
        certs.key(Role::User, "bob").to_str().unwrap(),
    ]);
    assert_eq!(code, Some(1));
}

/// `flocker node n1` founding a one-node cluster from `certs`, on the
/// in-memory engine.
fn node(tmp: &Path, certs: &Path, extra: &[&str]) -> (std::process::Child, std::net::SocketAddr) {
    let addr = free_addr();
    let child = Command::new(BIN)
        .arg("node")
        .args([
            "--name",
            "n1",
            "--listen",
            &addr.to_string(),
            "--engine",
            "sim",
            "--routing",
            "off",
        ])
        .arg("--data-dir")
        .arg(tmp.join("data-n1"))
        .arg("--certs")
        .arg(certs)
        .args(["--peers", &format!("n1={addr}")])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    (child, addr)
}

#[test]
fn a_node_refuses_a_certs_directory_holding_the_ca_key_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, _) = ca_dir(&tmp);
    let (mut child, _) = node(tmp.path(), &dir, &[]);
    let exited = wait_until(Duration::from_secs(20), || child.try_wait().unwrap());
    let Some(status) = exited else {
        let _ = child.kill();
        panic!("the node ran with the CA key in its certs directory");
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("ca.key is the cluster CA's private key"),
        "{err}"
    );
    assert!(
        err.contains("mint certificates for the whole cluster"),
        "{err}"
    );
    assert!(err.contains("flocker ca bundle"), "{err}");
    assert!(err.contains("--allow-ca-key"), "{err}");
    assert!(
        !tmp.path().join("data-n1").join("raft").exists(),
        "nothing was started"
    );

    let (mut child, addr) = node(tmp.path(), &dir, &["--allow-ca-key"]);
    let served = wait_until(Duration::from_secs(20), || {
        let r = ctl_at(addr, &dir, &["--user", "alice", "nodes"]);
        (r.code == 0).then_some(())
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(served.is_some(), "the node serves with --allow-ca-key");
}

/// `--san`: the node certificates also name the addresses and DNS names
/// given (so HTTPS clients verify a node by its address); a renewal keeps
/// them; a user certificate or a malformed name is refused before anything
/// is written; `bundle --p12` is for users only.
#[test]
fn san_names_go_into_node_certificates_and_survive_renewal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("certs");
    let d = dir.to_str().unwrap();
    let ok = |out: std::process::Output| {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    ok(flocker(&[
        "ca",
        "init",
        "--dir",
        d,
        "--nodes",
        "n1",
        "--san",
        "127.0.0.1",
        "--san",
        "api.example.com",
    ]));
    let certs = CertsDir::new(&dir);
    let sans =
        |role, name| flocker::ca::extra_sans(&load_cert(&certs.cert(role, name)).unwrap(), name);
    assert_eq!(sans(Role::Node, "n1"), ["127.0.0.1", "api.example.com"]);
    assert_eq!(sans(Role::User, "admin"), ["admin.user.flocker"]);
    ok(flocker(&[
        "ca", "issue", "--dir", d, "--node", "n2", "--san", "::1",
    ]));
    assert_eq!(sans(Role::Node, "n2"), ["::1"]);
    ok(flocker(&["ca", "renew", "--dir", d, "--node", "n1"]));
    assert_eq!(sans(Role::Node, "n1"), ["127.0.0.1", "api.example.com"]);

    let out = flocker(&[
        "ca", "issue", "--dir", d, "--user", "u", "--san", "10.0.0.1",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("node certificates only"));
    assert!(!certs.cert(Role::User, "u").exists());
    let out = flocker(&[
        "ca",
        "issue",
        "--dir",
        d,
        "--node",
        "n3",
        "--san",
        "not a name",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("'not a name'"));
    assert!(!certs.cert(Role::Node, "n3").exists());
    let out_dir = tmp.path().join("b");
    let o = out_dir.to_str().unwrap();
    let out = flocker(&[
        "ca", "bundle", "--dir", d, "--node", "n1", "--out", o, "--p12",
    ]);
    assert!(!out.status.success());
    assert!(!out_dir.exists(), "nothing written for a refused --p12");
}
