//! Certificates refused at the TLS handshake, with reasons both sides can
//! act on: an expired certificate ("certificate expired on DATE", and the
//! caller hears that its own certificate expired), and a certificate on the
//! deny list, refused by a node as client and by a caller as server.

mod common;

use common::*;
use flocker::ca::{self, format_unix, CertsDir, Identity, Role, Subject, Validity};
use flocker::net::endpoint::serve_call;
use flocker::net::tls::{load_cert, TlsMaterial};
use flocker::net::{CallError, DenyList, Net, Service, StreamHandler};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

#[test]
fn an_expired_user_certificate_is_refused_with_its_date_on_both_sides() {
    let mut c = Cluster::start(&["n1"], &[], &["--engine", "sim"]);
    c.wait_for_leader(Duration::from_secs(20));
    let ca_dir = c.certs();
    let old = c.dir.path().join("bundles").join("old");
    let out = std::process::Command::new(BIN)
        .args(["ca", "issue", "--dir"])
        .arg(&ca_dir)
        .args(["--user", "old", "--expired-days-ago", "3"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    bundle(&ca_dir, "--user", "old", &old);
    let cert =
        Identity::from_der(&load_cert(&CertsDir::new(&old).cert(Role::User, "old")).unwrap())
            .unwrap();
    let date = format_unix(cert.not_after);

    let r = ctl_at(c.addr("n1"), &old, &["--user", "old", "nodes"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr
            .contains(&format!("our certificate (user 'old') expired on {date}")),
        "{}",
        r.stderr
    );
    let logged = wait_until(T, || {
        c.log("n1")
            .contains(&format!(
                "refused user 'old': certificate expired on {date}"
            ))
            .then_some(())
    });
    assert!(logged.is_some(), "the node logs why: {}", c.log("n1"));
    // The admin's valid certificate still works.
    assert!(c.nodes_json("n1").is_some());
}

/// Answers every Client stream with "pong".
struct Pong;

impl StreamHandler for Pong {
    fn handle(
        self: Arc<Self>,
        peer: Identity,
        _service: Service,
        send: quinn::SendStream,
        recv: quinn::RecvStream,
    ) -> futures::future::BoxFuture<'static, ()> {
        Box::pin(async move {
            serve_call(&peer, send, recv, 1024, 1024, |_: String| async {
                Ok("pong".to_string())
            })
            .await
        })
    }
}

async fn ping(net: &Net, addr: SocketAddr) -> Result<String, CallError> {
    net.call(addr, None, Service::Client, &"ping".to_string(), 1024, T)
        .await
}

/// Log lines of this test binary, for the refusals the verifiers log.
fn capture_logs() -> Arc<Mutex<Vec<u8>>> {
    let buffer = Arc::new(Mutex::new(Vec::new()));
    let writer = buffer.clone();
    tracing_subscriber::fmt()
        .with_writer(move || Sink(writer.clone()))
        .with_ansi(false)
        .init();
    buffer
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn a_denied_fingerprint_is_refused_at_the_handshake_in_both_directions() {
    let logs = capture_logs();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ca");
    ca::init(
        &dir,
        &["n1".to_string()],
        &[Subject::user("admin"), Subject::user("ops")],
        Validity::default(),
    )
    .unwrap();
    let certs = CertsDir::new(&dir);
    let fp = |role, name| {
        Identity::from_der(&load_cert(&certs.cert(role, name)).unwrap())
            .unwrap()
            .fingerprint
    };
    let (ops_fp, n1_fp) = (fp(Role::User, "ops"), fp(Role::Node, "n1"));

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let deny = DenyList::new();
        let tls = TlsMaterial::load(&certs, Role::Node, "n1")
            .unwrap()
            .with_deny_list(deny.clone());
        let server = Net::server("127.0.0.1:0".parse().unwrap(), &tls).unwrap();
        let addr = server.local_addr().unwrap();
        server.serve(Arc::new(Pong));

        let ops = TlsMaterial::load(&certs, Role::User, "ops").unwrap();
        let admin = TlsMaterial::load(&certs, Role::User, "admin").unwrap();
        assert_eq!(
            ping(&Net::client(&ops, addr).unwrap(), addr).await.unwrap(),
            "pong"
        );

        // Denied from now on: new connections with that certificate fail,
        // others are untouched.
        deny.replace([ops_fp.clone()].into());
        let err = ping(&Net::client(&ops, addr).unwrap(), addr)
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, CallError::Unreachable { .. }), "{text}");
        assert!(
            text.contains(&format!(
                "our certificate (user 'ops', fingerprint {ops_fp}) is revoked"
            )),
            "{text}"
        );
        assert_eq!(
            ping(&Net::client(&admin, addr).unwrap(), addr)
                .await
                .unwrap(),
            "pong"
        );

        // A caller never talks to a node whose certificate it denies.
        let wary = TlsMaterial::load(&certs, Role::User, "admin").unwrap();
        wary.deny.replace([n1_fp.clone()].into());
        let err = ping(&Net::client(&wary, addr).unwrap(), addr)
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("the peer's certificate is revoked"),
            "{err}"
        );
        server.close();
    });
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        logs.contains(&format!(
            "refused user 'ops': certificate {ops_fp} is revoked"
        )),
        "{logs}"
    );
    assert!(
        logs.contains(&format!(
            "refused node 'n1': certificate {n1_fp} is revoked"
        )),
        "{logs}"
    );
}
