//! Security at the edge of a node: missing or foreign client certificates,
//! user certificates on Raft, one node's certificate acting as another, and
//! garbage or oversize frames. Each is refused with a clear error, and the
//! node keeps serving.

mod common;

use common::*;
use flocker::api::client::Client;
use flocker::api::{ClientEnvelope, ClientReply, ClientRequest};
use flocker::ca::{self, CertsDir, Role};
use flocker::net::frame::{read_frame, MAX_CLIENT_FRAME, MAX_RAFT_FRAME};
use flocker::net::tls::{load_cert, TlsMaterial};
use flocker::net::{CallError, Net, Service};
use flocker::raft::{node_id_for, RaftRpc};
use openraft::raft::VoteRequest;
use openraft::Vote;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use std::net::SocketAddr;
use std::time::Duration;

const T: Duration = Duration::from_secs(20);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("runtime")
}

fn still_serves(c: &Cluster, via: &str) {
    let nodes = c
        .nodes_json(via)
        .expect("node keeps serving after bad input");
    assert_eq!(nodes.len(), 3);
}

fn failure(reply: ClientReply) -> String {
    match reply {
        ClientReply::Failed {
            unknown: false,
            message,
        } => message,
        other => panic!("expected a refusal with nothing changed, got {other:?}"),
    }
}

#[test]
fn clients_without_a_valid_certificate_are_refused() {
    let mut c = Cluster::start(&["n1", "n2", "n3"], &[], &[]);
    c.wait_for_leader(T);
    let addr = c.addr("n1");
    let certs = CertsDir::new(c.certs());
    let ca = load_cert(&certs.ca_cert()).unwrap();
    let foreign_dir = c.dir.path().join("foreign");
    ca::init(
        &foreign_dir,
        &[],
        &[ca::Subject::user("admin")],
        ca::Validity::default(),
    )
    .unwrap();
    let foreign = CertsDir::new(&foreign_dir);

    rt().block_on(async {
        // No client certificate at all.
        let anonymous = TlsMaterial {
            ca: ca.clone(),
            own: None,
            deny: Default::default(),
        };
        let msg = failure(
            Client::with_tls(&anonymous, addr)
                .unwrap()
                .request(ClientRequest::Nodes { stale: true })
                .await,
        );
        assert!(msg.contains("refused our TLS credentials"), "{msg}");
        assert!(msg.contains("certificate required"), "{msg}");

        // A certificate from another CA, presented to a node it trusts.
        let foreign_admin = TlsMaterial {
            ca: ca.clone(),
            own: Some((
                vec![load_cert(&foreign.cert(Role::User, "admin")).unwrap()],
                PrivateKeyDer::from_pem_file(foreign.key(Role::User, "admin")).unwrap(),
            )),
            deny: Default::default(),
        };
        let msg = failure(
            Client::with_tls(&foreign_admin, addr)
                .unwrap()
                .request(ClientRequest::Nodes { stale: true })
                .await,
        );
        assert!(msg.contains("refused our TLS credentials"), "{msg}");
    });

    // And from the command line: a certs directory of another cluster.
    let r = ctl_at(addr, &foreign_dir, &["nodes"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("UnknownIssuer"), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("not signed by the CA in your certs directory"),
        "{}",
        r.stderr
    );
    assert!(
        c.log("n1").contains("refused connection"),
        "the node logs the refusal"
    );
    still_serves(&c, "n1");
}

fn vote_as(name: &str) -> RaftRpc {
    RaftRpc::Vote(VoteRequest::new(Vote::new(1_000, node_id_for(name)), None))
}

async fn raft_call(net: &Net, addr: SocketAddr, rpc: &RaftRpc) -> CallError {
    match net
        .call::<_, serde_json::Value>(addr, None, Service::Raft, rpc, MAX_RAFT_FRAME, T)
        .await
    {
        Ok(_) => panic!("raft RPC should have been refused"),
        Err(e) => e,
    }
}

#[test]
fn raft_rpcs_need_the_senders_own_node_certificate() {
    let mut c = Cluster::start(&["n1", "n2", "n3"], &[], &[]);
    let leader = c.wait_for_leader(T);
    let term_before = c.nodes_json("n1").unwrap()[0]["term"].as_u64().unwrap();
    let addr = c.addr("n1");
    let certs = CertsDir::new(c.certs());
    rt().block_on(async {
        let user = Net::client(&TlsMaterial::load(&certs, Role::User, "admin").unwrap(), addr).unwrap();
        let err = raft_call(&user, addr, &vote_as("n2")).await;
        assert!(
            matches!(&err, CallError::Refused(m) if m.contains("need a node certificate") && m.contains("user 'admin'")),
            "{err}"
        );
        let n3 = Net::client(&TlsMaterial::load(&certs, Role::Node, "n3").unwrap(), addr).unwrap();
        let err = raft_call(&n3, addr, &vote_as("n2")).await;
        assert!(
            matches!(&err, CallError::Refused(m) if m.contains("on behalf of another node")),
            "{err}"
        );
        // Node-to-node requests are refused to users too.
        let err = user
            .call::<_, serde_json::Value>(
                addr,
                None,
                Service::Peer,
                &flocker::api::PeerRequest::Status,
                MAX_CLIENT_FRAME,
                T,
            )
            .await
            .unwrap_err();
        assert!(matches!(&err, CallError::Refused(m) if m.contains("node certificate")), "{err}");
    });
    // The forged high-term votes disturbed nothing.
    let nodes = c.nodes_json("n1").unwrap();
    assert_eq!(nodes[0]["term"].as_u64().unwrap(), term_before);
    assert!(nodes.iter().all(|n| n["leader"] == leader.as_str()));
}

/// Sends raw bytes after a service tag and returns the node's reply frame.
async fn raw(net: &Net, addr: SocketAddr, tag: u8, bytes: &[u8]) -> Result<ClientReply, String> {
    let (mut send, mut recv) = net.open(addr, None).await.unwrap();
    send.write_all(&[tag]).await.unwrap();
    send.write_all(bytes).await.unwrap();
    let _ = send.finish();
    read_frame::<_, Result<ClientReply, String>>(&mut recv, MAX_CLIENT_FRAME)
        .await
        .expect("the node answers with a frame")
}

#[test]
fn garbage_and_oversize_frames_close_only_their_stream() {
    let mut c = Cluster::start(&["n1", "n2", "n3"], &[], &[]);
    c.wait_for_leader(T);
    let addr = c.addr("n2");
    let certs = CertsDir::new(c.certs());
    rt().block_on(async {
        let net = Net::client(
            &TlsMaterial::load(&certs, Role::User, "admin").unwrap(),
            addr,
        )
        .unwrap();
        let client = Service::Client as u8;
        let oversize = raw(&net, addr, client, &u32::MAX.to_be_bytes())
            .await
            .unwrap_err();
        assert!(oversize.contains("exceeds the limit"), "{oversize}");
        let bad_version = raw(&net, addr, client, &[0, 0, 0, 3, 77, 1, 2])
            .await
            .unwrap_err();
        assert!(bad_version.contains("version 77"), "{bad_version}");
        let undecodable = raw(&net, addr, client, &[0, 0, 0, 4, 1, 0xff, 0xff, 0xff])
            .await
            .unwrap_err();
        assert!(undecodable.contains("undecodable"), "{undecodable}");
        let truncated = raw(&net, addr, client, &[0, 0, 1, 0, 1]).await.unwrap_err();
        assert!(truncated.contains("before a whole frame"), "{truncated}");
        let unknown = raw(&net, addr, 99, &[]).await.unwrap_err();
        assert!(unknown.contains("unknown service tag"), "{unknown}");
        // The same connection still carries good requests.
        let good = net
            .call::<_, ClientReply>(
                addr,
                None,
                Service::Client,
                &ClientEnvelope::new(ClientRequest::Nodes { stale: false }),
                MAX_CLIENT_FRAME,
                T,
            )
            .await
            .unwrap();
        assert!(
            matches!(good, ClientReply::Nodes(ref v) if v.len() == 3),
            "{good:?}"
        );
    });
    assert!(c.is_running("n2"));
    still_serves(&c, "n2");
}
